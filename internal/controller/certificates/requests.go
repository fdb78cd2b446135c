package certificates

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"

	certificatesv1 "k8s.io/api/certificates/v1"
)

// The checks of what a request asks for, each signer's: upstream's words
// when a request is not what its signer signs.

// parseRequest reads spec.request, a PEM "CERTIFICATE REQUEST".
func parseRequest(data []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("PEM block type must be CERTIFICATE REQUEST")
	}
	return x509.ParseCertificateRequest(block.Bytes)
}

// Upstream's reasons a request is not a node's client certificate.
var (
	errOrgNotNodes       = errors.New("subject organization is not system:nodes")
	errCNNotNode         = errors.New("subject common name does not begin with system:node:")
	errDNSSANNotAllowed  = errors.New("DNS subjectAltNames are not allowed")
	errEmailNotAllowed   = errors.New("Email subjectAltNames are not allowed")
	errIPSANNotAllowed   = errors.New("IP subjectAltNames are not allowed")
	errURISANNotAllowed  = errors.New("URI subjectAltNames are not allowed")
	errDNSOrIPSANMissing = errors.New("DNS or IP subjectAltName is required")
)

// validateKubeletClient: subject system:node:NAME in system:nodes only, no
// subject alternative names, usages digital signature and client auth
// (key encipherment allowed).
func validateKubeletClient(req *x509.CertificateRequest, usages []certificatesv1.KeyUsage) error {
	switch {
	case !slices.Equal(req.Subject.Organization, []string{nodesGroup}):
		return errOrgNotNodes
	case len(req.DNSNames) > 0:
		return errDNSSANNotAllowed
	case len(req.EmailAddresses) > 0:
		return errEmailNotAllowed
	case len(req.IPAddresses) > 0:
		return errIPSANNotAllowed
	case len(req.URIs) > 0:
		return errURISANNotAllowed
	case !strings.HasPrefix(req.Subject.CommonName, nodeUserPrefix):
		return errCNNotNode
	}
	return usagesAre(usages, certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth)
}

// validateKubeletServing: subject system:node:NAME in system:nodes, DNS or
// IP names only, usages digital signature and server auth (key
// encipherment allowed).
func validateKubeletServing(req *x509.CertificateRequest, usages []certificatesv1.KeyUsage) error {
	switch {
	case !slices.Equal(req.Subject.Organization, []string{nodesGroup}):
		return errOrgNotNodes
	case len(req.DNSNames) == 0 && len(req.IPAddresses) == 0:
		return errDNSOrIPSANMissing
	case len(req.EmailAddresses) > 0:
		return errEmailNotAllowed
	case len(req.URIs) > 0:
		return errURISANNotAllowed
	}
	if err := usagesAre(usages, certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth); err != nil {
		return err
	}
	if !strings.HasPrefix(req.Subject.CommonName, nodeUserPrefix) {
		return errCNNotNode
	}
	return nil
}

// usagesAre: usages are exactly want, or want and key encipherment.
func usagesAre(usages []certificatesv1.KeyUsage, want ...certificatesv1.KeyUsage) error {
	withKE := append([]certificatesv1.KeyUsage{certificatesv1.UsageKeyEncipherment}, want...)
	if sameSet(usages, want) || sameSet(usages, withKE) {
		return nil
	}
	names := make([]string, len(withKE))
	for i, u := range withKE {
		names[i] = string(u)
	}
	slices.Sort(names)
	return fmt.Errorf("usages did not match %v", names)
}

func sameSet(a, b []certificatesv1.KeyUsage) bool {
	set := map[certificatesv1.KeyUsage]bool{}
	for _, u := range a {
		set[u] = true
	}
	if len(set) != len(b) {
		return false
	}
	for _, u := range b {
		if !set[u] {
			return false
		}
	}
	return true
}

// validateAPIServerClient: client auth, with digital signature and key
// encipherment allowed.
func validateAPIServerClient(_ *x509.CertificateRequest, usages []certificatesv1.KeyUsage) error {
	clientAuth := false
	for _, u := range usages {
		switch u {
		case certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment:
		case certificatesv1.UsageClientAuth:
			clientAuth = true
		default:
			return fmt.Errorf("invalid usage for client certificate: %s", u)
		}
	}
	if !clientAuth {
		return fmt.Errorf("missing required usage for client certificate: %s", certificatesv1.UsageClientAuth)
	}
	return nil
}
