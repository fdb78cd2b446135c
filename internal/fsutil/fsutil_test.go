package fsutil

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestWriteFileAtomicReplaces(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	for _, content := range []string{"one", "two"} {
		if err := WriteFileAtomic(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != content {
			t.Fatalf("read %q, %v; want %q", b, err, content)
		}
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
}

// TestLockExcludesAnotherProcess takes the lock here and tries it from a
// child process (flock locks are per open file, so a second process is the
// real test).
func TestLockExcludesAnotherProcess(t *testing.T) {
	if p := os.Getenv("FSUTIL_LOCK_CHILD"); p != "" {
		_, err := TryLock(p)
		if errors.Is(err, ErrLocked) {
			os.Stdout.WriteString("locked: " + err.Error())
			os.Exit(0)
		}
		os.Exit(3)
	}
	p := filepath.Join(t.TempDir(), "lock")
	l, err := TryLock(p)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=TestLockExcludesAnotherProcess")
	cmd.Env = append(os.Environ(), "FSUTIL_LOCK_CHILD="+p)
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("child: %v, %q; want ErrLocked naming pid %d", err, out, os.Getpid())
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	l2, err := TryLock(p)
	if err != nil {
		t.Fatalf("after Unlock: %v", err)
	}
	l2.Unlock()
}
