package provisioner

import (
	"os"
	"syscall"

	corev1 "k8s.io/api/core/v1"
)

// CrashEnv, set to CrashAfterCreateVolume in a process's environment,
// makes its provisioners kill the process (SIGKILL, as `kill -9`) right
// after a CreateVolume succeeds and before the PersistentVolume is
// created: the one moment at which a crash could leak a backend volume.
// The e2e crash test uses it to stop a real server exactly there; the
// journal (journal.go) must then heal it on restart.
const (
	CrashEnv               = "MOORAGE_TEST_CRASH"
	CrashAfterCreateVolume = "after-create-volume"
)

// crashHook is the afterCreateVolume hook CrashEnv asks for, or nil.
func crashHook() func(*corev1.PersistentVolumeClaim) error {
	if os.Getenv(CrashEnv) != CrashAfterCreateVolume {
		return nil
	}
	return func(*corev1.PersistentVolumeClaim) error {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // the signal is on its way
	}
}
