package cli

import (
	"os"
	"path/filepath"
	"strings"

	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/plugin"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"
)

// runKubectl runs the embedded kubectl with args, as k3s does. With no
// kubeconfig given (flag, $KUBECONFIG or ~/.kube/config), it uses moorage's.
func runKubectl(args []string) int {
	if os.Getenv("KUBECONFIG") == "" && !hasKubeconfigFlag(args) {
		home, _ := os.UserHomeDir()
		if _, err := os.Stat(filepath.Join(home, ".kube", "config")); err != nil {
			own := filepath.Join(DefaultDataDir(), "kubeconfig")
			if _, err := os.Stat(own); err == nil {
				os.Setenv("KUBECONFIG", own)
			}
		}
	}
	cmd := kubectlcmd.NewDefaultKubectlCommandWithArgs(kubectlcmd.KubectlOptions{
		PluginHandler: kubectlcmd.NewDefaultPluginHandler(plugin.ValidPluginFilenamePrefixes),
		Arguments:     append([]string{"kubectl"}, args...),
		ConfigFlags:   kubectlConfigFlags(),
		IOStreams:     ioStreams(),
	})
	cmd.SetArgs(args)
	if err := cmd.Execute(); err != nil {
		cmdutil.CheckErr(err) // prints as kubectl does and exits non-zero
	}
	return 0
}

func hasKubeconfigFlag(args []string) bool {
	for _, a := range args {
		if a == "--kubeconfig" || strings.HasPrefix(a, "--kubeconfig=") {
			return true
		}
	}
	return false
}
