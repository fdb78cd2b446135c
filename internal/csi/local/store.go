package local

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/moorage/moorage/internal/fsutil"
)

// A volume is an image file, volumes/<id>.img, and its record,
// volumes/<id>.json. The record is written last on create (atomically:
// temp file, fsync, rename) and removed last on delete, so "the record
// exists" is "the volume exists": an image without a record is a create
// that crashed, a record without an image a delete that crashed, and
// loading finishes both.

// volume is one volume's record.
type volume struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Capacity is the image's size; the image is the truth on load.
	Capacity int64 `json:"capacityBytes"`
	// Block volumes are handed over raw; the others hold FSType.
	Block  bool   `json:"block,omitempty"`
	FSType string `json:"fsType,omitempty"`
}

func (v *volume) shape() volumeShape { return volumeShape{block: v.Block, fsType: v.FSType} }

// volumeID derives a volume's ID from its name, so a CreateVolume retried
// after a crash finds the image it had started.
func volumeID(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "v-" + hex.EncodeToString(sum[:12])
}

var volumeIDPattern = regexp.MustCompile(`^v-[0-9a-f]{24}$`)

func (d *Driver) imagePath(id string) string  { return filepath.Join(d.volDir, id+".img") }
func (d *Driver) recordPath(id string) string { return filepath.Join(d.volDir, id+".json") }

func (d *Driver) saveVolume(v *volume) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(d.recordPath(v.ID), append(data, '\n'), 0o600)
}

// loadVolumes reads every record, and finishes creates and deletes that a
// crash interrupted.
func (d *Driver) loadVolumes() (map[string]*volume, error) {
	entries, err := os.ReadDir(d.volDir)
	if err != nil {
		return nil, err
	}
	vols := map[string]*volume{}
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-"):
			// an atomic write that did not reach its rename
			if err := os.Remove(filepath.Join(d.volDir, name)); err != nil {
				return nil, err
			}
		case strings.HasSuffix(name, ".json"):
			id := strings.TrimSuffix(name, ".json")
			data, err := os.ReadFile(d.recordPath(id))
			if err != nil {
				return nil, err
			}
			v := &volume{}
			if err := json.Unmarshal(data, v); err != nil {
				return nil, fmt.Errorf("volume record %s: %w", d.recordPath(id), err)
			}
			if v.ID != id {
				return nil, fmt.Errorf("volume record %s: holds ID %q", d.recordPath(id), v.ID)
			}
			st, err := os.Stat(d.imagePath(id))
			if errors.Is(err, fs.ErrNotExist) {
				if err := os.Remove(d.recordPath(id)); err != nil { // a delete that crashed
					return nil, err
				}
				continue
			}
			if err != nil {
				return nil, err
			}
			v.Capacity = st.Size() // an expansion may have crashed before its record
			vols[id] = v
		}
	}
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".img")
		if !ok || vols[id] != nil || !volumeIDPattern.MatchString(id) {
			continue
		}
		// A create that crashed before its record: never handed out.
		if err := detachAll(d.imagePath(id)); err != nil {
			return nil, err
		}
		if err := os.Remove(d.imagePath(id)); err != nil {
			return nil, err
		}
	}
	return vols, nil
}
