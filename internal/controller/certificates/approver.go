package certificates

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"slices"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// ApproverComponent names the approver, as kube-controller-manager does.
const ApproverComponent = "certificatesigningrequest-approving-controller"

// Upstream's words on an approval.
const (
	ApprovedReason            = "AutoApproved"
	SelfApprovedMessage       = "Auto approving self kubelet client certificate after SubjectAccessReview."
	NodeClientApprovedMessage = "Auto approving kubelet client certificate after SubjectAccessReview."
)

// Upstream's names of node users and of bootstrap tokens' group.
const (
	nodeUserPrefix     = "system:node:"
	nodesGroup         = "system:nodes"
	bootstrappersGroup = "system:bootstrappers"
)

// NewApprover builds upstream's csrapproving controller. Where upstream
// asks a SubjectAccessReview whether the requester may create node client
// certificates, moorage (which has no authorization) decides by who the
// requester is: a node renewing its own certificate (user system:node:NAME
// in system:nodes, the certificate's common name), or a bootstrap token's
// user (in system:bootstrappers) asking for a node's first one.
func NewApprover(cfg *rest.Config, log *slog.Logger, opts Options) (*Controller, error) {
	c, err := newController(cfg, log, ApproverComponent, opts)
	if err != nil {
		return nil, err
	}
	c.handle = c.approve
	return c, nil
}

func (c *Controller) approve(ctx context.Context, csr *certificatesv1.CertificateSigningRequest) error {
	if approved, denied := approval(csr); approved || denied {
		return nil
	}
	req, err := parseRequest(csr.Spec.Request)
	if err != nil {
		return fmt.Errorf("unable to parse csr %q: %w", csr.Name, err)
	}
	message, ok := autoApproval(csr, req)
	if !ok {
		return nil
	}
	csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: ApprovedReason, Message: message,
	})
	if _, err := c.client.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("error updating approval for csr: %w", err)
	}
	c.log.Info("approved", "csr", csr.Name, "requestor", csr.Spec.Username, "subject", req.Subject.CommonName)
	return nil
}

// autoApproval is the approver's decision: the message of the Approved
// condition to add, if csr is a node's client certificate request that
// the node itself (renewing) or a bootstrap token asks for.
func autoApproval(csr *certificatesv1.CertificateSigningRequest, req *x509.CertificateRequest) (string, bool) {
	if csr.Spec.SignerName != certificatesv1.KubeAPIServerClientKubeletSignerName || validateKubeletClient(req, csr.Spec.Usages) != nil {
		return "", false
	}
	switch {
	case csr.Spec.Username == req.Subject.CommonName && slices.Contains(csr.Spec.Groups, nodesGroup):
		return SelfApprovedMessage, true
	case slices.Contains(csr.Spec.Groups, bootstrappersGroup):
		return NodeClientApprovedMessage, true
	}
	return "", false
}
