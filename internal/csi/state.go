package csi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// State is the recorded state of a staged volume or of one publish target.
type State string

const (
	// StateStaged: NodeStageVolume succeeded (or the driver does not
	// stage and Stage was called).
	StateStaged State = "staged"
	// StatePublished: NodePublishVolume succeeded for the target.
	StatePublished State = "published"
	// StateUncertain: a call was sent (or was about to be) and did not
	// end in OK. The driver may have done all, part or none of it; the
	// next Stage/Publish repeats the call and the next
	// Unstage/Unpublish calls the driver to undo it. This is the
	// kubelet's DeviceMountUncertain / VolumeMountUncertain.
	StateUncertain State = "uncertain"
)

// VolumeState is what NodeVolumes knows about one volume on this node.
type VolumeState struct {
	VolumeID string `json:"volumeID"`
	// Stage is StateStaged or StateUncertain.
	Stage State `json:"stage"`
	// StagingPath is the staging directory sent to NodeStageVolume, and
	// passed to NodePublishVolume and NodeExpandVolume; empty when the
	// driver does not have STAGE_UNSTAGE_VOLUME.
	StagingPath string `json:"stagingPath,omitempty"`
	// Targets maps each publish target path to StatePublished or
	// StateUncertain.
	Targets map[string]State `json:"targets,omitempty"`
}

func (v *VolumeState) clone() *VolumeState {
	c := *v
	c.Targets = make(map[string]State, len(v.Targets))
	for k, s := range v.Targets {
		c.Targets[k] = s
	}
	return &c
}

// stateDir stores one JSON file per volume, named by the SHA-256 of the
// volume ID (IDs are opaque strings), written with temp file + fsync +
// rename + fsync of the directory so that a crash leaves either the old or
// the new record, never a torn one.
type stateDir string

const (
	stateSuffix = ".json"
	tmpPrefix   = ".tmp-"
)

func (d stateDir) file(volumeID string) string {
	sum := sha256.Sum256([]byte(volumeID))
	return filepath.Join(string(d), hex.EncodeToString(sum[:])+stateSuffix)
}

func (d stateDir) save(v *VolumeState) (err error) {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(string(d), tmpPrefix)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), d.file(v.VolumeID)); err != nil {
		return err
	}
	return d.sync()
}

func (d stateDir) remove(volumeID string) error {
	if err := os.Remove(d.file(volumeID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return d.sync()
}

func (d stateDir) sync() error {
	f, err := os.Open(string(d))
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// load reads every record and deletes temp files left by a crash. A record
// that does not parse, or whose name does not match its volume ID, is an
// error: the writes are atomic, so it was not torn by us, and guessing
// would risk skipping an unpublish or unstage.
func (d stateDir) load() (map[string]*VolumeState, error) {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(string(d))
	if err != nil {
		return nil, err
	}
	vols := map[string]*VolumeState{}
	for _, e := range entries {
		name := e.Name()
		p := filepath.Join(string(d), name)
		switch {
		case strings.HasPrefix(name, tmpPrefix):
			if err := os.Remove(p); err != nil {
				return nil, err
			}
		case strings.HasSuffix(name, stateSuffix):
			data, err := os.ReadFile(p)
			if err != nil {
				return nil, err
			}
			var v VolumeState
			if err := json.Unmarshal(data, &v); err != nil {
				return nil, fmt.Errorf("csi state %s: %w", p, err)
			}
			if v.VolumeID == "" || d.file(v.VolumeID) != p ||
				(v.Stage != StateStaged && v.Stage != StateUncertain) {
				return nil, fmt.Errorf("csi state %s: inconsistent record", p)
			}
			if v.Targets == nil {
				v.Targets = map[string]State{}
			}
			vols[v.VolumeID] = &v
		}
	}
	return vols, nil
}
