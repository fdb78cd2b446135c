package registry

import (
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/moorage/moorage/internal/registry/validation"
	"github.com/moorage/moorage/internal/user"
)

// certificateSigningRequests is certificates.k8s.io/v1's CSR with
// upstream's strategies: the requester's identity is recorded on create;
// the spec never changes; /approval changes only the conditions (Approved,
// Denied), /status everything in the status but those.
func certificateSigningRequests() *Resource {
	csr := withValidation(&Resource{
		GVK: certificatesv1.SchemeGroupVersion.WithKind("CertificateSigningRequest"), Plural: "certificatesigningrequests",
		Singular: "certificatesigningrequest", ShortNames: []string{"csr"}, Status: true,
	})
	csr.PrepareForCreate = func(obj runtime.Object) {
		c := obj.(*certificatesv1.CertificateSigningRequest)
		c.Spec.Username, c.Spec.UID, c.Spec.Groups, c.Spec.Extra = "", "", nil, nil
		c.Status = certificatesv1.CertificateSigningRequestStatus{}
	}
	csr.SetRequester = func(obj runtime.Object, u user.Info) {
		c := obj.(*certificatesv1.CertificateSigningRequest)
		c.Spec.Username, c.Spec.UID, c.Spec.Groups = u.Name, u.UID, append([]string(nil), u.Groups...)
		if len(u.Extra) > 0 {
			c.Spec.Extra = map[string]certificatesv1.ExtraValue{}
			for k, v := range u.Extra {
				c.Spec.Extra[k] = append(certificatesv1.ExtraValue(nil), v...)
			}
		}
	}
	csr.PrepareForUpdate = func(obj, old runtime.Object) {
		obj.(*certificatesv1.CertificateSigningRequest).Spec = old.(*certificatesv1.CertificateSigningRequest).Spec
	}
	csr.PrepareForStatusUpdate = func(obj, old runtime.Object) {
		n, o := obj.(*certificatesv1.CertificateSigningRequest), old.(*certificatesv1.CertificateSigningRequest)
		// Approval is the approval subresource's: keep the old Approved
		// and Denied conditions where the write has as many of them (a
		// write adding or removing one fails validation).
		keepConditions(n, o, certificatesv1.CertificateApproved)
		keepConditions(n, o, certificatesv1.CertificateDenied)
		stampConditions(n, o)
	}
	csr.Subresources = []Subresource{{
		Name: "approval",
		PrepareForUpdate: func(obj, old runtime.Object) {
			n, o := obj.(*certificatesv1.CertificateSigningRequest), old.(*certificatesv1.CertificateSigningRequest)
			stampConditions(n, o)
			conditions := n.Status.Conditions
			n.Status = *o.Status.DeepCopy()
			n.Status.Conditions = conditions
		},
		ValidateUpdate: validation.ValidateCertificateSigningRequestApprovalUpdate,
	}}
	csr.FieldLabels = func(obj runtime.Object) fields.Set {
		return fields.Set{"spec.signerName": obj.(*certificatesv1.CertificateSigningRequest).Spec.SignerName}
	}
	return csr
}

// keepConditions puts o's conditions of type t back into n, in n's
// positions of that type, when n has as many of them.
func keepConditions(n, o *certificatesv1.CertificateSigningRequest, t certificatesv1.RequestConditionType) {
	var was, is []int
	for i, c := range o.Status.Conditions {
		if c.Type == t {
			was = append(was, i)
		}
	}
	for i, c := range n.Status.Conditions {
		if c.Type == t {
			is = append(is, i)
		}
	}
	if len(was) != len(is) {
		return
	}
	for k, i := range is {
		n.Status.Conditions[i] = o.Status.Conditions[was[k]]
	}
}

// stampConditions sets the conditions' lastUpdateTime, if unset, to now,
// and their lastTransitionTime, if unset, to that of the same type and
// status in o, else now.
func stampConditions(n, o *certificatesv1.CertificateSigningRequest) {
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	for i := range n.Status.Conditions {
		c := &n.Status.Conditions[i]
		if c.LastUpdateTime.IsZero() {
			c.LastUpdateTime = now
		}
		if !c.LastTransitionTime.IsZero() {
			continue
		}
		c.LastTransitionTime = now
		for _, was := range o.Status.Conditions {
			if was.Type == c.Type && was.Status == c.Status && !was.LastTransitionTime.IsZero() {
				c.LastTransitionTime = was.LastTransitionTime
				break
			}
		}
	}
}
