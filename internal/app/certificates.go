package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/moorage/moorage/internal/controller/certificates"
	"github.com/moorage/moorage/internal/controller/sharedinformers"
	"github.com/moorage/moorage/internal/pki"
)

// startCertificateControllers starts what issues node certificates (the
// kubelet's TLS bootstrapping): the approver of node client certificate
// requests and the signer that signs approved requests with ca. They share
// one informer on CertificateSigningRequests.
func startCertificateControllers(ctx context.Context, wg *sync.WaitGroup, cfg *rest.Config, ca pki.CA, log *slog.Logger) error {
	client, err := kubernetes.NewForConfig(rest.AddUserAgent(rest.CopyConfig(cfg), "certificates-informers"))
	if err != nil {
		return err
	}
	shared := sharedinformers.New(client)
	approver, err := certificates.NewApprover(cfg, log, certificates.Options{Informers: shared})
	if err != nil {
		return err
	}
	signer, err := certificates.NewSigner(cfg, log, ca, certificates.SignerOptions{Options: certificates.Options{Informers: shared}})
	if err != nil {
		return err
	}
	for _, run := range []func(context.Context){approver.Run, signer.Run} {
		wg.Go(func() { run(ctx) })
	}
	return nil
}

// kubeletClientValidity is how long the server's client certificate for
// node agents lasts; it is made again when a fifth of that is left.
const kubeletClientValidity = 365 * 24 * time.Hour

// kubeletClientTLS is the TLS configuration with which a server reaches
// node agents: it presents kubeadm's apiserver-kubelet-client certificate
// (CN kube-apiserver-kubelet-client, O system:masters), signed by ca and
// made at start-up (and again before it expires). As kube-apiserver
// without --kubelet-certificate-authority, it does not verify the agents'
// serving certificates, which they sign themselves.
func kubeletClientTLS(ca pki.CA) (*tls.Config, error) {
	var mu sync.Mutex
	var current *tls.Certificate
	var renewAt time.Time
	get := func() (*tls.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		if current != nil && time.Now().Before(renewAt) {
			return current, nil
		}
		cert, err := pki.KubeletClientCert(ca, kubeletClientValidity)
		if err != nil {
			return nil, err
		}
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, err
		}
		current, renewAt = &cert, leaf.NotAfter.Add(-leaf.NotAfter.Sub(leaf.NotBefore)/5)
		return current, nil
	}
	if _, err := get(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:           tls.VersionTLS12,
		InsecureSkipVerify:   true, // #nosec G402: agents serve self-signed certificates, as kubelets do by default
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return get() },
	}, nil
}
