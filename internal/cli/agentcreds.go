package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/moorage/moorage/internal/bootstraptoken"
	"github.com/moorage/moorage/internal/failover"
	"github.com/moorage/moorage/internal/fsutil"
	"github.com/moorage/moorage/internal/nodecert"
)

// agentCreds is how the agent authenticates to its server.
type agentCreds struct {
	cfg *rest.Config
	// node is set when the agent authenticates with its node client
	// certificate (after a --token join), which it renews.
	node *nodeCreds
}

// nodeCreds are the node client certificate of a joined agent: the pair,
// kept in the joined kubeconfig (client-certificate-data) and in one PEM
// file that cfg names, which client-go reloads when it is renewed.
type nodeCreds struct {
	name       string
	pair       nodecert.Pair
	kubeconfig string
	files      nodecert.Files
}

// agentConfig is the agent's client configuration. With --token it joins
// --server (bootstraptoken.Join) and, authenticated with the token, asks
// for the node's client certificate (nodecert.Request), then keeps a
// kubeconfig with that certificate in the data directory: the token is
// needed no more. As the kubelet with --bootstrap-kubeconfig, a kept
// kubeconfig whose certificate is still valid for --server and the node
// is used without joining again. Without --token it uses --kubeconfig if
// given, else the kubeconfig of an earlier join, else the default
// --kubeconfig.
func agentConfig(cmd *cobra.Command, dataDir, kubeconfig, server, token, node string, timeout time.Duration) (agentCreds, error) {
	switch {
	case token != "" || server != "":
		if token == "" || server == "" {
			return agentCreds{}, errors.New("--server and --token go together: give both to join a server")
		}
		if cmd.Flags().Changed("kubeconfig") {
			return agentCreds{}, errors.New("--kubeconfig and --token name the server two ways: give one")
		}
		t, err := bootstraptoken.Parse(token)
		if err != nil {
			return agentCreds{}, fmt.Errorf("--token: %w", err)
		}
		urls := strings.Split(server, ",")
		creds, err := loadJoined(dataDir, node)
		if err != nil || creds.node == nil || !slices.Contains(urls, creds.cfg.Host) {
			// Not joined before (a kept certificate makes the token needless).
			creds, err = join(cmd.Context(), dataDir, urls, t, node, timeout)
		}
		if err != nil {
			return agentCreds{}, err
		}
		if err := fsutil.WriteFileAtomic(joinedServers(dataDir), []byte(strings.Join(urls, "\n")+"\n"), 0o600); err != nil {
			return agentCreds{}, err
		}
		return creds, failover.Configure(creds.cfg, urls)
	case !cmd.Flags().Changed("kubeconfig"):
		if _, err := os.Stat(joinedKubeconfig(dataDir)); err == nil {
			return loadJoined(dataDir, node)
		}
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return agentCreds{}, fmt.Errorf("--kubeconfig: %w", err)
	}
	return agentCreds{cfg: cfg}, nil
}

// join is TLS bootstrapping: token discovery with the first of servers
// that answers, then the node's client certificate requested with the
// bootstrap token.
func join(ctx context.Context, dataDir string, servers []string, t bootstraptoken.Token, node string, timeout time.Duration) (agentCreds, error) {
	var joined *clientcmdapi.Config
	var errs []error
	server := ""
	for _, server = range servers {
		j, err := bootstraptoken.Join(ctx, server, t)
		if err == nil {
			joined = j
			break
		}
		errs = append(errs, fmt.Errorf("joining %s: %w", server, err))
	}
	if joined == nil {
		return agentCreds{}, errors.Join(errs...)
	}
	bootstrap, err := clientcmd.NewDefaultClientConfig(*joined, nil).ClientConfig()
	if err != nil {
		return agentCreds{}, err
	}
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(bootstrap, "moorage-agent-bootstrap"))
	if err != nil {
		return agentCreds{}, err
	}
	pair, err := nodecert.Request(ctx, client, node, nodecert.RequestOptions{Timeout: timeout})
	if err != nil {
		return agentCreds{}, fmt.Errorf("joining %s as node %s: %w", server, node, err)
	}
	n := &nodeCreds{name: node, pair: pair, kubeconfig: joinedKubeconfig(dataDir), files: nodeCertFiles(dataDir)}
	cluster := joined.Clusters[joined.Contexts[joined.CurrentContext].Cluster]
	if err := n.keep(server, cluster.CertificateAuthorityData); err != nil {
		return agentCreds{}, err
	}
	return agentCreds{cfg: n.restConfig(server, cluster.CertificateAuthorityData), node: n}, nil
}

// loadJoined reads the kubeconfig an earlier join kept. One with a node
// certificate must hold a valid certificate for node.
func loadJoined(dataDir, node string) (agentCreds, error) {
	path := joinedKubeconfig(dataDir)
	kept, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return agentCreds{}, err
	}
	ctx, ok := kept.Contexts[kept.CurrentContext]
	if !ok || kept.Clusters[ctx.Cluster] == nil || kept.AuthInfos[ctx.AuthInfo] == nil {
		return agentCreds{}, fmt.Errorf("%s: no current context with a cluster and a user", path)
	}
	cluster, auth := kept.Clusters[ctx.Cluster], kept.AuthInfos[ctx.AuthInfo]
	if len(auth.ClientCertificateData) == 0 {
		// Joined before node certificates: the bootstrap token.
		cfg, err := clientcmd.NewDefaultClientConfig(*kept, nil).ClientConfig()
		return agentCreds{cfg: cfg}, err
	}
	n := &nodeCreds{name: node, pair: nodecert.Pair{CertPEM: auth.ClientCertificateData, KeyPEM: auth.ClientKeyData},
		kubeconfig: path, files: nodeCertFiles(dataDir)}
	cert, err := n.pair.Certificate()
	if err != nil {
		return agentCreds{}, fmt.Errorf("%s: the node certificate: %w", path, err)
	}
	switch {
	case time.Now().After(cert.NotAfter):
		return agentCreds{}, fmt.Errorf("%s: the node certificate expired at %s: join again with --server and --token", path, cert.NotAfter.Format(time.RFC3339))
	case cert.Subject.CommonName != nodecert.UserPrefix+node:
		return agentCreds{}, fmt.Errorf("%s: the certificate is %s's, not node %s's: use another --data-dir, or --node-name %s",
			path, cert.Subject.CommonName, node, cert.Subject.CommonName[len(nodecert.UserPrefix):])
	}
	if err := n.files.Write(n.pair); err != nil {
		return agentCreds{}, err
	}
	cfg := n.restConfig(cluster.Server, cluster.CertificateAuthorityData)
	// Joined with several servers: reach whichever is up.
	if data, err := os.ReadFile(joinedServers(dataDir)); err == nil {
		if err := failover.Configure(cfg, strings.Fields(string(data))); err != nil {
			return agentCreds{}, fmt.Errorf("%s: %w", joinedServers(dataDir), err)
		}
	}
	return agentCreds{cfg: cfg, node: n}, nil
}

// joinedServers lists the --server URLs of a join, one a line, for the
// restarts without --server.
func joinedServers(dataDir string) string { return filepath.Join(dataDir, "agent.servers") }

// keep writes the pair to the joined kubeconfig and the current PEM file.
func (n *nodeCreds) keep(server string, caPEM []byte) error {
	user := nodecert.UserPrefix + n.name
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["moorage"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: n.pair.CertPEM, ClientKeyData: n.pair.KeyPEM}
	cfg.Contexts["moorage"] = &clientcmdapi.Context{Cluster: "moorage", AuthInfo: user}
	cfg.CurrentContext = "moorage"
	if err := n.files.Write(n.pair); err != nil {
		return err
	}
	return writeJoined(n.kubeconfig, cfg)
}

// restConfig authenticates with the current PEM file, which client-go
// reloads when a renewal replaces it.
func (n *nodeCreds) restConfig(server string, caPEM []byte) *rest.Config {
	return &rest.Config{Host: server, TLSClientConfig: rest.TLSClientConfig{
		CAData: caPEM, CertFile: n.files.Current(), KeyFile: n.files.Current(),
	}}
}

// renew keeps the node certificate fresh (nodecert.Renew) until ctx ends.
func (n *nodeCreds) renew(ctx context.Context, cfg *rest.Config, log *slog.Logger) error {
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), "moorage-agent-certificates"))
	if err != nil {
		return err
	}
	go nodecert.Renew(ctx, client, n.name, n.pair, func(p nodecert.Pair) error {
		n.pair = p
		return n.keep(cfg.Host, cfg.TLSClientConfig.CAData)
	}, log, 0)
	return nil
}

func nodeCertFiles(dataDir string) nodecert.Files {
	return nodecert.Files{Dir: filepath.Join(dataDir, "pki")}
}

// clientCAs is the pool of the CA that cfg trusts: the agent's API takes
// client certificates it issued (the kubelet's --client-ca-file). Nil if
// cfg names no CA.
func clientCAs(cfg *rest.Config) (*x509.CertPool, error) {
	data := cfg.TLSClientConfig.CAData
	if len(data) == 0 && cfg.TLSClientConfig.CAFile != "" {
		var err error
		if data, err = os.ReadFile(cfg.TLSClientConfig.CAFile); err != nil {
			return nil, err
		}
	}
	if len(data) == 0 {
		return nil, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, errors.New("the kubeconfig's certificate authority is not PEM certificates")
	}
	return pool, nil
}
