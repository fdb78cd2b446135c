package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// createNetNS makes a new network namespace and pins it at path (a bind
// mount of the namespace file, as `ip netns add` does), so that it outlives
// every process in it.
func createNetNS(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	err = onNewThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare network namespace: %w", err)
		}
		if err := unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("pin network namespace at %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		_ = os.Remove(path)
	}
	return err
}

// removeNetNS unpins a namespace made by createNetNS; the kernel frees it
// (and its interfaces) once no process or socket uses it.
func removeNetNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unpin network namespace %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// isNetNS tells whether path pins a network namespace.
func isNetNS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// In runs f on an OS thread that has joined the network namespace at path.
// Sockets f creates belong to that namespace for their whole life, whatever
// thread later reads or writes them.
func In(path string, f func() error) error {
	return onNewThread(func() error {
		ns, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("network namespace: %w", err)
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("join network namespace %s: %w", path, err)
		}
		return f()
	})
}

// onNewThread runs f on a locked thread of its own and puts the thread
// back in this process's network namespace afterwards; if that fails the
// thread stays locked and dies with its goroutine, so no other goroutine
// ever runs in the wrong namespace.
func onNewThread(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer own.Close()
		ferr := f()
		if unix.Setns(int(own.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// ListenIn opens a stream listener (tcp) in the namespace at path.
func ListenIn(path, network, addr string) (l net.Listener, err error) {
	err = In(path, func() error {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacketIn opens a packet socket (udp) in the namespace at path.
func ListenPacketIn(path, network, addr string) (pc net.PacketConn, err error) {
	err = In(path, func() error {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// DialIn connects from the namespace at path: how the agent reaches a pod's
// ports (port-forward dials the pod's own loopback, as the kubelet does).
func DialIn(ctx context.Context, path, network, addr string) (c net.Conn, err error) {
	err = In(path, func() error {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// CreateNamespace makes a network namespace pinned at path (tests use it
// for machines: a namespace with its own addresses on this host).
func CreateNamespace(path string) error { return createNetNS(path) }

// RemoveNamespace unpins a namespace made by CreateNamespace.
func RemoveNamespace(path string) error { return removeNetNS(path) }
