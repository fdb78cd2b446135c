package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	crashObjects   = 2000                    // volumes, and as many claims
	crashKills     = 20                      // kill -9s, each followed by a restart
	crashMaxRun    = 1500 * time.Millisecond // a run lasts a random 0 … crashMaxRun
	crashCreators  = 8
	crashNamespace = "bindcrash"
	crashClass     = "crash"
	crashSettle    = 90 * time.Second // after the last restart, every claim must be Bound within this
)

// TestBinderKillDuringBinding: 2,000 volumes, then 2,000 claims that fit
// them, created through client-go by 8 creators while the binder binds them;
// moorage is killed with SIGKILL at random moments 20 times and restarted on
// the same data dir each time. After the last restart every claim must end
// Bound, with upstream's invariant intact: each claim names a volume whose
// claimRef names that claim (and its uid), no volume is bound twice, no volume
// is bound to a claim that does not exist, and every acknowledged create is
// there.
func TestBinderKillDuringBinding(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	binderKillDuringBinding(t)
}

// TestBinderKillDuringBindingOnEtcd is the same on etcd (issue 7): each
// restarted server takes back its own leader lease at once.
func TestBinderKillDuringBindingOnEtcd(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	binderKillDuringBinding(t, "--etcd-endpoints", startEtcd(t))
}

func binderKillDuringBinding(t *testing.T, flags ...string) {
	dir := t.TempDir()
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	t.Logf("random seed %d", seed)
	begin := time.Now()

	// ---- the server: one at a time, swapped on each restart
	var (
		srvMu   sync.Mutex
		srv     *moorage
		gen     = make(chan struct{}) // closed when the current server goes; replaced on each start
		client  kubernetes.Interface
		history []string // what was killed when
		// finalStarted: the current server is the last one, started with
		// startMoorageIn (its cleanup stops it)
		finalStarted bool
	)
	logf := func(format string, args ...any) {
		srvMu.Lock()
		defer srvMu.Unlock()
		history = append(history, fmt.Sprintf("%7.3fs ", time.Since(begin).Seconds())+fmt.Sprintf(format, args...))
	}
	t.Cleanup(func() {
		if t.Failed() || testing.Verbose() {
			srvMu.Lock()
			defer srvMu.Unlock()
			t.Logf("what happened (seed %d):\n%s", seed, strings.Join(history, "\n"))
		}
	})
	newClient := func(kubeconfig string) kubernetes.Interface {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		cfg.QPS = -1 // no client-side throttling
		cfg.Timeout = 10 * time.Second
		return kubernetes.NewForConfigOrDie(cfg)
	}
	// current returns the live client and a channel closed when it dies.
	current := func() (kubernetes.Interface, chan struct{}) {
		srvMu.Lock()
		defer srvMu.Unlock()
		return client, gen
	}
	start := func(final bool) {
		t0 := time.Now()
		var m *moorage
		if final {
			m = startMoorageWith(t, dir, flags...) // stopped with SIGTERM (exit 0 expected) at the end
		} else {
			var err error
			if m, err = launch(dir, flags...); err != nil {
				t.Fatalf("restart on the same data dir: %v", err)
			}
		}
		c := newClient(m.Kubeconfig)
		srvMu.Lock()
		srv, client, gen, finalStarted = m, c, make(chan struct{}), final
		srvMu.Unlock()
		logf("started (ready after %v) at %s", time.Since(t0).Round(time.Millisecond), m.URL)
	}
	kill := func() *moorage {
		srvMu.Lock()
		m, g := srv, gen
		srv = nil
		srvMu.Unlock()
		m.kill()
		close(g)
		os.RemoveAll(m.tmp)
		return m
	}
	stop := make(chan struct{}) // closed when the test returns: creators give up
	defer func() {
		close(stop)
		srvMu.Lock()
		m, fin := srv, finalStarted
		srvMu.Unlock()
		if m != nil && !fin { // a t.Fatal half-way: take the launched server down
			m.kill()
			os.RemoveAll(m.tmp)
		}
	}()
	// waitNext waits until the server that old belonged to has been replaced.
	waitNext := func(old chan struct{}) bool {
		for {
			if _, g := current(); g != old {
				return true
			}
			select {
			case <-stop:
				return false
			case <-time.After(10 * time.Millisecond):
			}
		}
	}

	start(false)
	{ // the namespace and class exist before anything else
		c, _ := current()
		if _, err := c.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: crashNamespace}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// ---- the creators: every object until it is acknowledged (or found
	// already there: created by a request whose answer the kill cut off)
	type ack struct {
		uid      types.UID
		existing bool // AlreadyExists: written before a kill, answer lost
	}
	var (
		ackMu      sync.Mutex
		ackedPV    = map[string]ack{}
		ackedClaim = map[string]ack{}
		nAckPV     atomic.Int64
		nAckClaim  atomic.Int64
		failures   atomic.Int64
	)
	pvName := func(i int) string { return fmt.Sprintf("crash-pv-%04d", i) }
	claimName := func(i int) string { return fmt.Sprintf("crash-claim-%04d", i) }
	quantity := resource.MustParse("1Gi")
	newPV := func(i int) *corev1.PersistentVolume {
		return &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: pvName(i)},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: quantity},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
				StorageClassName:              crashClass,
				PersistentVolumeSource: corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{
					Server: "172.17.0.8", Path: fmt.Sprintf("/exports/%04d", i)}},
			},
		}
	}
	newClaim := func(i int) *corev1.PersistentVolumeClaim {
		class := crashClass
		return &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: claimName(i), Namespace: crashNamespace},
			Spec: corev1.PersistentVolumeClaimSpec{
				StorageClassName: &class,
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: quantity}},
			},
		}
	}
	// createAll creates objects 0 … n-1 with create(i) through the pool.
	createAll := func(what string, create func(c kubernetes.Interface, i int) (types.UID, error), record func(i int, a ack)) {
		work := make(chan int, crashObjects)
		for i := 0; i < crashObjects; i++ {
			work <- i
		}
		close(work)
		var wg sync.WaitGroup
		for w := 0; w < crashCreators; w++ {
			wg.Go(func() {
				for i := range work {
					for {
						c, dead := current()
						uid, err := create(c, i)
						switch {
						case err == nil:
							record(i, ack{uid: uid})
						case apierrors.IsAlreadyExists(err):
							record(i, ack{existing: true})
						default:
							failures.Add(1)
							if !transient(err) {
								logf("creating %s %d: unexpected error: %v", what, i, err)
							}
							select { // the server is going or gone: wait for the next
							case <-dead:
								if !waitNext(dead) {
									return
								}
							case <-stop:
								return
							case <-time.After(200 * time.Millisecond):
							}
							continue
						}
						break
					}
				}
			})
		}
		wg.Wait()
	}
	creatorsDone := make(chan struct{})
	go func() {
		defer close(creatorsDone)
		createAll("volume", func(c kubernetes.Interface, i int) (types.UID, error) {
			pv, err := c.CoreV1().PersistentVolumes().Create(context.Background(), newPV(i), metav1.CreateOptions{})
			if err != nil {
				return "", err
			}
			return pv.UID, nil
		}, func(i int, a ack) {
			ackMu.Lock()
			ackedPV[pvName(i)] = a
			ackMu.Unlock()
			nAckPV.Add(1)
		})
		logf("all %d volumes acknowledged", crashObjects)
		createAll("claim", func(c kubernetes.Interface, i int) (types.UID, error) {
			pvc, err := c.CoreV1().PersistentVolumeClaims(crashNamespace).Create(context.Background(), newClaim(i), metav1.CreateOptions{})
			if err != nil {
				return "", err
			}
			return pvc.UID, nil
		}, func(i int, a ack) {
			ackMu.Lock()
			ackedClaim[claimName(i)] = a
			ackMu.Unlock()
			nAckClaim.Add(1)
		})
		logf("all %d claims acknowledged", crashObjects)
	}()

	// ---- the killer: run a random while, kill -9, restart; 20 times
	boundNow := func() int { // a quick look at progress, for the log
		c, _ := current()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		list, err := c.CoreV1().PersistentVolumeClaims(crashNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return -1
		}
		n := 0
		for _, pvc := range list.Items {
			if pvc.Status.Phase == corev1.ClaimBound {
				n++
			}
		}
		return n
	}
	for k := 1; k <= crashKills; k++ {
		run := time.Duration(rng.Int64N(int64(crashMaxRun)))
		time.Sleep(run)
		m := kill()
		logf("kill -9 #%d after running %v (exit %d): %d volumes, %d claims acknowledged so far",
			k, run.Round(time.Millisecond), m.exit, nAckPV.Load(), nAckClaim.Load())
		if m.exit == 0 {
			t.Errorf("kill #%d: moorage exited 0; it should have been killed", k)
		}
		start(k == crashKills)
		if k%5 == 0 || k == crashKills {
			logf("after restart #%d: %d claims Bound", k, boundNow())
		}
	}

	// ---- the end: creation finishes, everything binds
	select {
	case <-creatorsDone:
	case <-time.After(crashSettle):
		t.Fatalf("creation did not finish within %v of the last restart: %d volumes, %d claims acknowledged", crashSettle, nAckPV.Load(), nAckClaim.Load())
	}
	c, _ := current()
	ctx := context.Background()
	var (
		pvs    []corev1.PersistentVolume
		claims []corev1.PersistentVolumeClaim
	)
	loadClaims := func() error {
		cl, err := c.CoreV1().PersistentVolumeClaims(crashNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		claims = cl.Items
		return nil
	}
	settleStart := time.Now()
	bound, lastLog := 0, time.Now()
	for {
		if err := loadClaims(); err != nil {
			t.Fatalf("listing claims after the last restart: %v", err)
		}
		bound = 0
		for _, pvc := range claims {
			if pvc.Status.Phase == corev1.ClaimBound {
				bound++
			}
		}
		if bound == len(claims) && len(claims) == crashObjects {
			break
		}
		if time.Since(lastLog) >= time.Second {
			lastLog = time.Now()
			logf("%d of %d claims Bound", bound, len(claims))
		}
		if time.Since(settleStart) > crashSettle {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	pl, err := c.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("listing volumes after the last restart: %v", err)
	}
	pvs = pl.Items
	logf("after the last restart: %d of %d claims Bound after %v", bound, len(claims), time.Since(settleStart).Round(time.Millisecond))
	t.Logf("%d creates failed and were retried across %d kills; all %d claims settled %v after the last restart (%v in all)",
		failures.Load(), crashKills, crashObjects, time.Since(settleStart).Round(time.Millisecond), time.Since(begin).Round(time.Millisecond))

	// ---- the invariants
	ackMu.Lock()
	defer ackMu.Unlock()
	errs := checkBindInvariants(pvs, claims, ackedPV, func(a ack) (types.UID, bool) { return a.uid, a.existing }, ackedClaim)
	if len(errs) > 0 {
		const max = 40
		if len(errs) > max {
			errs = append(errs[:max], fmt.Sprintf("… and %d more", len(errs)-max))
		}
		t.Errorf("%d claims Bound of %d (want %d); invariants broken after %d kills:\n%s", bound, len(claims), crashObjects, crashKills, strings.Join(errs, "\n"))
	}
}

// checkBindInvariants checks upstream's binding invariant over every volume
// and claim, and that every acknowledged object exists (with the uid the
// create returned). It returns one line per violation.
func checkBindInvariants[A any](pvs []corev1.PersistentVolume, claims []corev1.PersistentVolumeClaim,
	ackedPV map[string]A, uidOf func(A) (types.UID, bool), ackedClaim map[string]A) []string {
	var errs []string
	pvByName := map[string]*corev1.PersistentVolume{}
	for i := range pvs {
		pvByName[pvs[i].Name] = &pvs[i]
	}
	claimByName := map[string]*corev1.PersistentVolumeClaim{}
	for i := range claims {
		claimByName[claims[i].Name] = &claims[i]
	}
	// every acknowledged object exists, the same one
	checkAcked := func(kind string, acked map[string]A, uidNow func(string) (types.UID, bool)) {
		names := make([]string, 0, len(acked))
		for n := range acked {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			uid, existing := uidOf(acked[n])
			got, ok := uidNow(n)
			switch {
			case !ok:
				errs = append(errs, fmt.Sprintf("acknowledged %s %s is missing", kind, n))
			case !existing && got != uid:
				errs = append(errs, fmt.Sprintf("acknowledged %s %s has uid %s, the create returned %s", kind, n, got, uid))
			}
		}
		if len(acked) != crashObjects {
			errs = append(errs, fmt.Sprintf("%d %ss acknowledged, want %d", len(acked), kind, crashObjects))
		}
	}
	checkAcked("volume", ackedPV, func(n string) (types.UID, bool) {
		if pv := pvByName[n]; pv != nil {
			return pv.UID, true
		}
		return "", false
	})
	checkAcked("claim", ackedClaim, func(n string) (types.UID, bool) {
		if pvc := claimByName[n]; pvc != nil {
			return pvc.UID, true
		}
		return "", false
	})

	// claims: Bound, naming a volume that names them back; no volume twice
	sort.Slice(claims, func(i, j int) bool { return claims[i].Name < claims[j].Name })
	takenBy := map[string]string{}
	for i := range claims {
		pvc := &claims[i]
		key := pvc.Namespace + "/" + pvc.Name
		if pvc.Status.Phase != corev1.ClaimBound {
			errs = append(errs, fmt.Sprintf("claim %s is %s (volumeName %q, annotations %v)", key, pvc.Status.Phase, pvc.Spec.VolumeName, pvc.Annotations))
		}
		if pvc.Spec.VolumeName == "" {
			continue
		}
		if other, dup := takenBy[pvc.Spec.VolumeName]; dup {
			errs = append(errs, fmt.Sprintf("claims %s and %s both name volume %s", other, key, pvc.Spec.VolumeName))
		}
		takenBy[pvc.Spec.VolumeName] = key
		pv := pvByName[pvc.Spec.VolumeName]
		switch {
		case pv == nil:
			errs = append(errs, fmt.Sprintf("claim %s names volume %s, which does not exist", key, pvc.Spec.VolumeName))
		case pv.Spec.ClaimRef == nil:
			errs = append(errs, fmt.Sprintf("claim %s names volume %s, whose claimRef is empty (phase %s)", key, pv.Name, pv.Status.Phase))
		case pv.Spec.ClaimRef.Namespace != pvc.Namespace || pv.Spec.ClaimRef.Name != pvc.Name || pv.Spec.ClaimRef.UID != pvc.UID:
			ref := pv.Spec.ClaimRef
			errs = append(errs, fmt.Sprintf("claim %s (uid %s) names volume %s, whose claimRef is %s/%s (uid %s)", key, pvc.UID, pv.Name, ref.Namespace, ref.Name, ref.UID))
		case pvc.Status.Phase == corev1.ClaimBound && pv.Status.Phase != corev1.VolumeBound:
			errs = append(errs, fmt.Sprintf("claim %s is Bound to volume %s, which is %s", key, pv.Name, pv.Status.Phase))
		}
		if pvc.Status.Phase == corev1.ClaimBound && (pvc.Annotations["pv.kubernetes.io/bind-completed"] != "yes" || pvc.Status.Capacity.Storage().IsZero()) {
			errs = append(errs, fmt.Sprintf("claim %s is Bound without bind-completed or status.capacity: %v %v", key, pvc.Annotations, pvc.Status.Capacity))
		}
	}
	// volumes: a claimRef names an existing claim (same uid) that names the
	// volume back
	sort.Slice(pvs, func(i, j int) bool { return pvs[i].Name < pvs[j].Name })
	for i := range pvs {
		pv := &pvs[i]
		ref := pv.Spec.ClaimRef
		if ref == nil {
			if pv.Status.Phase == corev1.VolumeBound {
				errs = append(errs, fmt.Sprintf("volume %s is Bound without a claimRef", pv.Name))
			}
			continue
		}
		pvc := claimByName[ref.Name]
		switch {
		case ref.Namespace != crashNamespace || pvc == nil:
			errs = append(errs, fmt.Sprintf("volume %s (phase %s) is bound to claim %s/%s, which does not exist", pv.Name, pv.Status.Phase, ref.Namespace, ref.Name))
		case ref.UID != pvc.UID:
			errs = append(errs, fmt.Sprintf("volume %s is bound to claim %s/%s uid %q, the claim's uid is %s", pv.Name, ref.Namespace, ref.Name, ref.UID, pvc.UID))
		case pvc.Spec.VolumeName != pv.Name:
			errs = append(errs, fmt.Sprintf("volume %s's claimRef names %s/%s, which names volume %q", pv.Name, ref.Namespace, ref.Name, pvc.Spec.VolumeName))
		}
	}
	return errs
}

// transient tells whether a create failed because the server went away (or
// had not come up yet): the request is retried on the next server.
func transient(err error) bool {
	var netErr net.Error
	var opErr *net.OpError
	switch {
	case errors.As(err, &opErr), errors.As(err, &netErr):
		return true
	case errors.Is(err, context.DeadlineExceeded):
		return true
	}
	s := err.Error()
	for _, frag := range []string{"EOF", "connection refused", "connection reset", "broken pipe", "http2:", "use of closed network connection", "server closed", "Client.Timeout", "tls:", "unexpected error when reading response body", "timed out"} {
		if strings.Contains(s, frag) {
			return true
		}
	}
	return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) || apierrors.IsServiceUnavailable(err)
}

// TestBindInvariantsChecker: the checker itself finds what it looks for (a
// crash test whose checker passed everything would prove nothing).
func TestBindInvariantsChecker(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: skipped with -short")
	}
	claim := func(name, uid, volume string, phase corev1.PersistentVolumeClaimPhase) corev1.PersistentVolumeClaim {
		return corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: crashNamespace, UID: types.UID(uid), Annotations: map[string]string{"pv.kubernetes.io/bind-completed": "yes"}},
			Spec:       corev1.PersistentVolumeClaimSpec{VolumeName: volume},
			Status:     corev1.PersistentVolumeClaimStatus{Phase: phase, Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		}
	}
	volume := func(name, claim, uid string) corev1.PersistentVolume {
		pv := corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("pv-" + name)}, Status: corev1.PersistentVolumeStatus{Phase: corev1.VolumeAvailable}}
		if claim != "" {
			pv.Spec.ClaimRef = &corev1.ObjectReference{Namespace: crashNamespace, Name: claim, UID: types.UID(uid)}
			pv.Status.Phase = corev1.VolumeBound
		}
		return pv
	}
	pvs := []corev1.PersistentVolume{
		volume("v1", "c1", "u1"),   // fine
		volume("v2", "c2", "old"),  // claimRef uid of an older c2
		volume("v3", "gone", "ug"), // bound to a claim that does not exist
		volume("v4", "", ""),       // c4 names it, it names nobody
	}
	claims := []corev1.PersistentVolumeClaim{
		claim("c1", "u1", "v1", corev1.ClaimBound),
		claim("c2", "u2", "v2", corev1.ClaimBound),
		claim("c3", "u3", "v1", corev1.ClaimBound), // v1 twice
		claim("c4", "u4", "v4", corev1.ClaimBound),
		claim("c5", "u5", "", corev1.ClaimPending),
	}
	acked := map[string]types.UID{"c1": "u1", "c9": "u9"}
	errs := strings.Join(checkBindInvariants(pvs, claims, map[string]types.UID{"v1": "pv-v1"},
		func(u types.UID) (types.UID, bool) { return u, false }, acked), "\n")
	for _, want := range []string{
		"acknowledged claim c9 is missing",
		"claims bindcrash/c1 and bindcrash/c3 both name volume v1",
		"claim bindcrash/c2 (uid u2) names volume v2, whose claimRef is bindcrash/c2 (uid old)",
		"claim bindcrash/c4 names volume v4, whose claimRef is empty",
		"claim bindcrash/c5 is Pending",
		"volume v3 (phase Bound) is bound to claim bindcrash/gone, which does not exist",
		"volume v2 is bound to claim bindcrash/c2 uid \"old\", the claim's uid is u2",
	} {
		if !strings.Contains(errs, want) {
			t.Errorf("the checker misses %q; it said:\n%s", want, errs)
		}
	}
	if strings.Contains(errs, "claim bindcrash/c1 (uid") || strings.Contains(errs, "claim bindcrash/c1 is") || strings.Contains(errs, "volume v1 ") {
		t.Errorf("the checker flags the consistent pair c1/v1:\n%s", errs)
	}
}
