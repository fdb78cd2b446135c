package printers

import (
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	certificatesv1beta1 "k8s.io/api/certificates/v1beta1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
)

func certificateSigningRequestPrinter() Printer {
	// Upstream takes these descriptions from the v1beta1 docs (Requestor's
	// is the request's).
	spec := certificatesv1beta1.CertificateSigningRequestSpec{}.SwaggerDoc()
	return Printer{
		Columns: []metav1.TableColumnDefinition{
			nameColumn(),
			ageColumn(),
			col("SignerName", "string", spec["signerName"]),
			col("Requestor", "string", spec["request"]),
			col("RequestedDuration", "string", spec["expirationSeconds"]),
			col("Condition", "string", certificatesv1beta1.CertificateSigningRequestStatus{}.SwaggerDoc()["conditions"]),
		},
		Row: rowOf(func(csr *certificatesv1.CertificateSigningRequest, now time.Time) ([]interface{}, error) {
			requested := "<none>"
			if e := csr.Spec.ExpirationSeconds; e != nil {
				requested = duration.HumanDuration(time.Duration(*e) * time.Second)
			}
			return []interface{}{csr.Name, since(csr.CreationTimestamp, now), orNone(csr.Spec.SignerName),
				csr.Spec.Username, requested, csrCondition(csr)}, nil
		}),
	}
}

// csrCondition is kubectl's CONDITION: Denied, else Approved, else
// Pending; then ",Failed" and ",Issued" when they apply.
func csrCondition(csr *certificatesv1.CertificateSigningRequest) string {
	var approved, denied, failed bool
	for _, c := range csr.Status.Conditions {
		switch c.Type {
		case certificatesv1.CertificateApproved:
			approved = true
		case certificatesv1.CertificateDenied:
			denied = true
		case certificatesv1.CertificateFailed:
			failed = true
		}
	}
	status := "Pending"
	switch {
	case denied:
		status = "Denied"
	case approved:
		status = "Approved"
	}
	if failed {
		status += ",Failed"
	}
	if len(csr.Status.Certificate) > 0 {
		status += ",Issued"
	}
	return status
}
