package bootstraptoken

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// clusterInfoPath is where cluster-info is read, without credentials.
var clusterInfoPath = "/api/v1/namespaces/" + metav1.NamespacePublic + "/configmaps/" + ConfigMapClusterInfo

// Join is kubeadm's token discovery: it reads cluster-info from server
// without trusting the server's certificate, checks the signature that t
// made of its kubeconfig, takes the CA from that kubeconfig, reads
// cluster-info again over TLS verified with that CA, and returns a
// kubeconfig for server that trusts the CA and authenticates with t.
func Join(ctx context.Context, server string, t Token) (*clientcmdapi.Config, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("--server %q: want an https:// URL of the API server", server)
	}
	insecure := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12} // #nosec G402: the JWS check below stands in for it
	cm, err := fetchClusterInfo(ctx, server, insecure)
	if err != nil {
		return nil, err
	}
	kubeconfig, ok := cm.Data[KeyKubeconfig]
	if !ok {
		return nil, fmt.Errorf("there is no %s key in the %s ConfigMap. This API Server isn't set up for token bootstrapping, can't connect", KeyKubeconfig, ConfigMapClusterInfo)
	}
	sig, ok := cm.Data[JWSKeyPrefix+t.ID]
	if !ok {
		return nil, fmt.Errorf("there is no JWS signed token in the %s ConfigMap. This token id %q is invalid for this cluster, can't connect", ConfigMapClusterInfo, t.ID)
	}
	if !Verify(kubeconfig, sig, t) {
		return nil, errors.New("failed to verify JWS signature of received cluster info object, can't trust this API Server")
	}
	info, err := clientcmd.Load([]byte(kubeconfig))
	if err != nil {
		return nil, fmt.Errorf("couldn't parse the kubeconfig file in the %s ConfigMap: %w", ConfigMapClusterInfo, err)
	}
	if len(info.Clusters) != 1 {
		return nil, fmt.Errorf("the kubeconfig in the %s ConfigMap has %d clusters, want exactly one", ConfigMapClusterInfo, len(info.Clusters))
	}
	var caPEM []byte
	for _, c := range info.Clusters {
		caPEM = c.CertificateAuthorityData
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("the kubeconfig in the %s ConfigMap has no certificate-authority-data", ConfigMapClusterInfo)
	}
	// The same object over verified TLS: the server holds a certificate of
	// the CA the signed kubeconfig names.
	again, err := fetchClusterInfo(ctx, server, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, fmt.Errorf("verifying the server with the CA from %s: %w", ConfigMapClusterInfo, err)
	}
	if again.Data[KeyKubeconfig] != kubeconfig {
		return nil, fmt.Errorf("the %s ConfigMap changed between its insecure and its secure reads; try again", ConfigMapClusterInfo)
	}
	user := "bootstrap-token-" + t.ID
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["moorage"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: t.String()}
	cfg.Contexts["moorage"] = &clientcmdapi.Context{Cluster: "moorage", AuthInfo: user}
	cfg.CurrentContext = "moorage"
	return cfg, nil
}

// fetchClusterInfo reads cluster-info from server without credentials.
func fetchClusterInfo(ctx context.Context, server string, tlsConfig *tls.Config) (*corev1.ConfigMap, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	target, err := url.JoinPath(server, clusterInfoPath)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig, Proxy: http.ProxyFromEnvironment}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading the %s ConfigMap: %w", ConfigMapClusterInfo, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var st metav1.Status
		if json.Unmarshal(body, &st) == nil && st.Message != "" {
			return nil, fmt.Errorf("reading the %s ConfigMap: %s (%d)", ConfigMapClusterInfo, st.Message, resp.StatusCode)
		}
		return nil, fmt.Errorf("reading the %s ConfigMap: %s", ConfigMapClusterInfo, resp.Status)
	}
	var cm corev1.ConfigMap
	if err := json.Unmarshal(body, &cm); err != nil {
		return nil, fmt.Errorf("reading the %s ConfigMap: %w", ConfigMapClusterInfo, err)
	}
	return &cm, nil
}
