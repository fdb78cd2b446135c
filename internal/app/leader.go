package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"github.com/moorage/moorage/internal/apiserver"
	"github.com/moorage/moorage/internal/fsutil"
)

// LeaderElection times the election of the server that runs the
// controllers and the scheduler, when several servers share one etcd
// (kube-controller-manager's --leader-elect-* flags). Zero values take
// upstream's defaults: 15 s, 10 s, 2 s. A leader that dies is replaced
// within about LeaseDuration + RetryPeriod; one that stops gives the lease
// up at once.
type LeaderElection struct {
	// LeaseDuration: how long the others wait after the last renewal
	// before taking the lease.
	LeaseDuration time.Duration
	// RenewDeadline: how long the leader keeps trying to renew before it
	// stops its controllers.
	RenewDeadline time.Duration
	// RetryPeriod: how often candidates try, and the leader renews.
	RetryPeriod time.Duration
}

// LeaderLease is the Lease in kube-system that the servers sharing one
// store elect their leader with.
const LeaderLease = "moorage-controllers"

func (o LeaderElection) withDefaults() LeaderElection {
	if o.LeaseDuration <= 0 {
		o.LeaseDuration = 15 * time.Second
	}
	if o.RenewDeadline <= 0 {
		o.RenewDeadline = min(10*time.Second, o.LeaseDuration*2/3)
	}
	if o.RetryPeriod <= 0 {
		o.RetryPeriod = min(2*time.Second, o.RenewDeadline/2)
	}
	return o
}

// leaderIdentity names this server in the Lease's holderIdentity as
// upstream does, the host name and a unique suffix; the suffix is kept in
// the data dir, so that a server restarted on it (the dir's lock says the
// old process is gone) takes its lease back at once instead of waiting
// for it to expire.
func leaderIdentity(dir string) (string, error) {
	host, _ := os.Hostname()
	path := filepath.Join(dir, "server-id")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return host + "_" + strings.TrimSpace(string(b)), nil
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	return host + "_" + id, fsutil.WriteFileAtomic(path, []byte(id+"\n"), 0o600)
}

// runWhileLeading campaigns for LeaderLease until ctx ends. Each time this
// server wins, lead runs with a context that ends when the lease is lost
// (or ctx ends); lead must return only once everything it started has
// stopped, so that two terms of this server never overlap. Then it
// campaigns again.
func runWhileLeading(ctx context.Context, wg *sync.WaitGroup, cfg *rest.Config, o LeaderElection, identity string, log *slog.Logger, lead func(context.Context)) error {
	o = o.withDefaults()
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(cfg, "moorage-leader-election"))
	if err != nil {
		return err
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: LeaderLease},
		Client:     client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	// A term's lead may start after the elector has already given up (it
	// is called in a goroutine); under mu it sees its context done and
	// does not start, and terms is waited for before the next campaign.
	var mu sync.Mutex
	var terms sync.WaitGroup
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   o.LeaseDuration,
		RenewDeadline:   o.RenewDeadline,
		RetryPeriod:     o.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            LeaderLease,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(term context.Context) {
				mu.Lock()
				if term.Err() != nil {
					mu.Unlock()
					return
				}
				terms.Add(1)
				mu.Unlock()
				defer terms.Done()
				log.Info("leading: running the controllers and the scheduler", "lease", metav1.NamespaceSystem+"/"+LeaderLease, "identity", identity)
				lead(term)
			},
			OnStoppedLeading: func() {},
			OnNewLeader: func(holder string) {
				if holder != identity {
					log.Info("another server leads", "lease", metav1.NamespaceSystem+"/"+LeaderLease, "leader", holder)
				}
			},
		},
	})
	if err != nil {
		return err
	}
	wg.Go(func() {
		for ctx.Err() == nil {
			elector.Run(ctx)
			mu.Lock()
			mu.Unlock() //nolint:staticcheck // a barrier: see above
			terms.Wait()
			if ctx.Err() == nil {
				log.Warn("lost the lead: stopped the controllers and the scheduler; campaigning again", "lease", metav1.NamespaceSystem+"/"+LeaderLease)
			}
		}
	})
	return nil
}

// repairServiceAllocations runs the API server's repair of Service IP and
// port reservations every few minutes, as upstream's repair controllers:
// a reservation still orphaned after a minute is freed.
func repairServiceAllocations(ctx context.Context, api *apiserver.Server, log *slog.Logger) {
	for {
		if err := api.RepairServiceAllocations(ctx, time.Minute); err != nil && ctx.Err() == nil {
			log.Warn("repairing Service IP and port reservations", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(3 * time.Minute):
		}
	}
}
