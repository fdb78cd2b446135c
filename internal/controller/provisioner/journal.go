package provisioner

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/types"

	"github.com/moorage/moorage/internal/csi"
	"github.com/moorage/moorage/internal/fsutil"
)

// intent is one journal record: a CreateVolume that was (or was about to be)
// sent and whose PersistentVolume does not exist yet. It holds everything
// needed to send the very same request again — the CSI idempotency key is
// the name, but a driver may answer ALREADY_EXISTS when other fields differ,
// so the request is replayed as it was, not rebuilt from a class or node
// labels that may have changed since.
type intent struct {
	// Request is the CreateVolume request without its secrets (which are
	// never written to disk); Request.Name is the volume and PV name.
	Request csi.CreateVolumeRequest `json:"request"`
	// Claim is the claim the volume is for.
	Claim claimID `json:"claim"`
	// SecretRef is where the provisioner secret came from, if any; it is
	// read again when the request is replayed.
	SecretRef *secretRef `json:"provisionerSecretRef,omitempty"`
}

type claimID struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	UID       types.UID `json:"uid"`
}

type secretRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// journal is a directory of records, one JSON file per volume name, each
// written atomically (temp file, fsync, rename, fsync of the directory) and
// mirrored in memory. A record is written before the first CreateVolume of
// a claim and removed once the claim's PV exists or the driver has
// definitively refused the request.
type journal struct {
	dir  string
	mu   sync.Mutex
	recs map[string]intent // by volume name
}

const journalSuffix = ".json"

func openJournal(dir string) (*journal, error) {
	if dir == "" {
		return nil, errors.New("provisioner: Options.JournalDir is required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("provisioner journal: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("provisioner journal: %w", err)
	}
	j := &journal{dir: dir, recs: map[string]intent{}}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") || !strings.HasSuffix(name, journalSuffix) {
			continue // temporary files of an interrupted write
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("provisioner journal: %w", err)
		}
		var r intent
		if err := json.Unmarshal(b, &r); err != nil || r.Request.Name+journalSuffix != name {
			// Refuse to start rather than forget a volume that may exist.
			return nil, fmt.Errorf("provisioner journal: %s is not a valid record (%v); move it away to start without it", filepath.Join(dir, name), err)
		}
		j.recs[r.Request.Name] = r
	}
	return j, nil
}

func (j *journal) get(volume string) (intent, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	r, ok := j.recs[volume]
	return r, ok
}

func (j *journal) has(volume string) bool {
	_, ok := j.get(volume)
	return ok
}

func (j *journal) all() []intent {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]intent, 0, len(j.recs))
	for _, r := range j.recs {
		out = append(out, r)
	}
	return out
}

// put writes r durably; only then may its CreateVolume be sent.
func (j *journal) put(r intent) error {
	r.Request.Secrets = nil
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(j.dir, r.Request.Name+journalSuffix), b, 0o600); err != nil {
		return fmt.Errorf("provisioner journal: %w", err)
	}
	j.mu.Lock()
	j.recs[r.Request.Name] = r
	j.mu.Unlock()
	return nil
}

// remove deletes the record of volume, durably; a missing one is fine.
func (j *journal) remove(volume string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := os.Remove(filepath.Join(j.dir, volume+journalSuffix)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("provisioner journal: %w", err)
	}
	d, err := os.Open(j.dir)
	if err != nil {
		return fmt.Errorf("provisioner journal: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("provisioner journal: %w", err)
	}
	delete(j.recs, volume)
	return nil
}
