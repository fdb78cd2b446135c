package agent

import (
	"context"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/moorage/moorage/internal/volume"
)

// tokenSource is the volume manager's TokenSource: the TokenRequest API
// (serviceaccounts/NAME/token), which the kubelet's token manager calls
// for projected serviceAccountToken sources.
type tokenSource struct{ client kubernetes.Interface }

var _ volume.TokenSource = tokenSource{}

func (s tokenSource) Token(ctx context.Context, namespace, serviceAccount string, req *authenticationv1.TokenRequest) (*authenticationv1.TokenRequest, error) {
	return s.client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount, req, metav1.CreateOptions{})
}
