package embedded

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/moorage/moorage/internal/store"
)

// crashEnv names the store file a TestCrashChild process storms.
const crashEnv = "MOORAGE_EMBEDDED_CRASH_STORE"

const (
	crashKeys    = 300
	crashWriters = 8
)

// ack is one acknowledged write, as the child reported it.
type ack struct {
	key  string
	rev  int64
	hash string
}

// TestCrash kills a writing process with SIGKILL mid-storm, a few times, and
// checks after each crash that every acknowledged write survived, nothing is
// half-written, the log and the current values agree, and writes go on.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	path := filepath.Join(t.TempDir(), "store.db")
	var acks []ack // of every round: earlier ones must survive too
	for round := range 3 {
		killAfter := 200 + rand.IntN(400)
		got := runCrashChild(t, path, killAfter)
		t.Logf("round %d: killed after %d acks, read %d", round, killAfter, len(got))
		acks = append(acks, got...)
		verifyCrashedStore(t, path, acks)
	}
}

// runCrashChild storms the store at path in a child process, kills it after
// killAfter acks and returns every ack it printed.
func runCrashChild(t *testing.T, path string, killAfter int) []ack {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acks []ack
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() { // after the kill: the lines already in the pipe, then EOF
		a, ok := parseAck(sc.Text())
		if !ok {
			continue // test framework output
		}
		acks = append(acks, a)
		if len(acks) == killAfter {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child ended by itself after %d acks (%v):\n%s", len(acks), err, stderr.Bytes())
	}
	return acks
}

func parseAck(line string) (ack, bool) {
	f := strings.Fields(line)
	if len(f) != 4 || f[0] != "ACK" {
		return ack{}, false
	}
	rev, err := strconv.ParseInt(f[2], 10, 64)
	return ack{key: f[1], rev: rev, hash: f[3]}, err == nil
}

// TestCrashChild is TestCrash's child process; it does nothing otherwise. It
// runs a write storm (creates and CAS updates of crashKeys keys from
// crashWriters goroutines) and prints "ACK key revision hash" for each write
// as soon as it is acknowledged, until it is killed.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("run by TestCrash")
	}
	s, err := Open(path, Options{LockTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second) // if never killed
	defer cancel()
	var out sync.Mutex
	var wg sync.WaitGroup
	for range crashWriters {
		wg.Go(func() {
			for ctx.Err() == nil {
				key := fmt.Sprintf("/crash/%03d", rand.IntN(crashKeys))
				value, hash := crashValue(key)
				kv, err := s.Get(ctx, key)
				switch {
				case errors.Is(err, store.ErrNotFound):
					kv, err = s.Create(ctx, key, value)
				case err == nil:
					kv, err = s.Update(ctx, key, value, kv.ModRevision)
				}
				if errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrConflict) || ctx.Err() != nil {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				out.Lock()
				fmt.Fprintf(os.Stdout, "ACK %s %d %s\n", key, kv.ModRevision, hash)
				out.Unlock()
			}
		})
	}
	wg.Wait()
}

// crashValue returns a new self-describing value for key and its hash:
// "key nonce padding hash", where hash covers what precedes it.
func crashValue(key string) (value []byte, hash string) {
	body := fmt.Sprintf("%s %016x %s", key, rand.Uint64(), strings.Repeat("x", rand.IntN(3000)))
	sum := sha256.Sum256([]byte(body))
	hash = hex.EncodeToString(sum[:8])
	return []byte(body + " " + hash), hash
}

// checkCrashValue checks that value is whole and belongs to key, and
// returns its hash.
func checkCrashValue(key string, value []byte) (string, error) {
	i := bytes.LastIndexByte(value, ' ')
	if i < 0 || !bytes.HasPrefix(value, []byte(key+" ")) {
		return "", fmt.Errorf("value of %s is not one of its values: %.40q", key, value)
	}
	sum := sha256.Sum256(value[:i])
	if hash := hex.EncodeToString(sum[:8]); hash != string(value[i+1:]) {
		return "", fmt.Errorf("value of %s does not match its hash", key)
	}
	return string(value[i+1:]), nil
}

// verifyCrashedStore reopens the store at path after a crash and checks it
// against the acks of every round.
func verifyCrashedStore(t *testing.T, path string, acks []ack) {
	t.Helper()
	s := openTest(t, path, Options{})
	defer s.Close()
	var current map[string]store.KeyValue
	logHashes := make(map[int64]string) // revision -> hash of the value written
	err := s.db.View(func(tx *bolt.Tx) error {
		var checkErr error
		for err := range tx.Check() { // drain: the checker reads the tx until done
			checkErr = cmp.Or(checkErr, err)
		}
		if checkErr != nil {
			return fmt.Errorf("bbolt check: %w", checkErr)
		}
		rev, _, err := readMeta(tx)
		if err != nil {
			return err
		}
		if current, err = readCurrent(tx); err != nil {
			return err
		}
		replayed, err := replayLog(tx, rev, logHashes)
		if err != nil {
			return err
		}
		return sameKVs(replayed, current)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acks {
		if logHashes[a.rev] != a.key+" "+a.hash {
			t.Fatalf("acknowledged write %s@%d (%s) is not in the log (have %q)", a.key, a.rev, a.hash, logHashes[a.rev])
		}
		if kv, ok := current[a.key]; !ok || kv.ModRevision < a.rev {
			t.Fatalf("acknowledged write %s@%d lost: current %s", a.key, a.rev, kvStringForTest(kv))
		}
	}
	// Writes go on from the stored revision.
	rev, _ := s.CurrentRevision(t.Context())
	kv, err := s.Create(t.Context(), fmt.Sprintf("/after/%d", rev), []byte("v"))
	if err != nil || kv.ModRevision != rev+1 {
		t.Fatalf("Create after the crash: %+v, %v; want revision %d", kv, err, rev+1)
	}
}

// readCurrent returns the kv bucket, checking every value.
func readCurrent(tx *bolt.Tx) (map[string]store.KeyValue, error) {
	current := make(map[string]store.KeyValue)
	err := tx.Bucket(bucketKV).ForEach(func(k, v []byte) error {
		view, err := decodeKV(k, v)
		if err != nil {
			return err
		}
		kv := view.toKV()
		if !strings.HasPrefix(kv.Key, "/after/") {
			if _, err := checkCrashValue(kv.Key, kv.Value); err != nil {
				return err
			}
		}
		current[kv.Key] = kv
		return nil
	})
	return current, err
}

// replayLog rebuilds the current values from the whole log, checking that
// the log holds revisions 1..rev, that each entry follows from the state
// before it, and that every value is whole. It records each revision's key
// and value hash in hashes.
func replayLog(tx *bolt.Tx, rev int64, hashes map[int64]string) (map[string]store.KeyValue, error) {
	state := make(map[string]store.KeyValue)
	want := int64(1)
	err := tx.Bucket(bucketLog).ForEach(func(k, v []byte) error {
		r, err := parseRevKey(k)
		if err != nil {
			return err
		}
		if r != want {
			return fmt.Errorf("log has revision %d where %d was expected", r, want)
		}
		want++
		rec, err := decodeLog(r, v)
		if err != nil {
			return err
		}
		ev := rec.event(r)
		prev, had := state[ev.KV.Key]
		if (ev.Type == store.Created) == had || (had && !kvEqualForTest(prev, *ev.PrevKV)) {
			return fmt.Errorf("log entry %d (%v %s) does not follow from %s", r, ev.Type, ev.KV.Key, kvStringForTest(prev))
		}
		if ev.Type == store.Deleted {
			delete(state, ev.KV.Key)
		} else {
			state[ev.KV.Key] = ev.KV
		}
		hash := ""
		if !strings.HasPrefix(ev.KV.Key, "/after/") {
			if hash, err = checkCrashValue(ev.KV.Key, ev.KV.Value); err != nil {
				return fmt.Errorf("log entry %d: %w", r, err)
			}
		}
		hashes[r] = ev.KV.Key + " " + hash
		return nil
	})
	if err == nil && want-1 != rev {
		err = fmt.Errorf("log ends at revision %d, meta says %d", want-1, rev)
	}
	return state, err
}

func sameKVs(replayed, current map[string]store.KeyValue) error {
	if len(replayed) != len(current) {
		return fmt.Errorf("log replays to %d keys, kv bucket has %d", len(replayed), len(current))
	}
	for k, kv := range current {
		if !kvEqualForTest(kv, replayed[k]) {
			return fmt.Errorf("key %s: kv bucket %s, log %s", k, kvStringForTest(kv), kvStringForTest(replayed[k]))
		}
	}
	return nil
}

func kvEqualForTest(a, b store.KeyValue) bool {
	return a.Key == b.Key && bytes.Equal(a.Value, b.Value) &&
		a.CreateRevision == b.CreateRevision && a.ModRevision == b.ModRevision
}

func kvStringForTest(kv store.KeyValue) string {
	return fmt.Sprintf("{%s c%d m%d %d bytes}", kv.Key, kv.CreateRevision, kv.ModRevision, len(kv.Value))
}
