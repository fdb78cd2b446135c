package app

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/moorage/moorage/internal/fsutil"
)

// ensureToken returns the admin bearer token kept in path, making one the
// first time.
func ensureToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	token := hex.EncodeToString(raw)
	return token, fsutil.WriteFileAtomic(path, []byte(token+"\n"), 0o600)
}

// writeKubeconfig writes a kubeconfig for url, trusting caPEM, with token.
func writeKubeconfig(path, url string, caPEM []byte, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["moorage"] = &clientcmdapi.Cluster{Server: url, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["moorage-admin"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["moorage"] = &clientcmdapi.Context{Cluster: "moorage", AuthInfo: "moorage-admin", Namespace: "default"}
	cfg.CurrentContext = "moorage"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, data, 0o600)
}

// restConfig is the client configuration of the server's own controllers.
func restConfig(url string, caPEM []byte, token string) *rest.Config {
	return &rest.Config{
		Host:            url,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: caPEM},
		UserAgent:       "moorage-controller-manager",
		QPS:             -1, // our own server: no client-side throttling
		// API warnings (deprecated fields...) are for people, not controllers.
		WarningHandler: rest.NoWarnings{},
	}
}
