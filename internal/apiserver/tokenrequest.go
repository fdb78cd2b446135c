package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/moorage/moorage/internal/serviceaccount"
)

var tokenRequestKind = authenticationv1.SchemeGroupVersion.WithKind("TokenRequest")

// createToken answers POST serviceaccounts/NAME/token, upstream's
// TokenRequest API: a JWT for the account, for the requested audiences
// (default: the API server) and lifetime (default one hour, at least ten
// minutes), optionally bound to a pod, secret or node of the account's
// namespace that must exist (with the given UID, if any). The reply is the
// request with status.token and status.expirationTimestamp.
func (s *Server) createToken(w http.ResponseWriter, r *http.Request, req *request) error {
	if r.Method != http.MethodPost {
		return apierrors.NewMethodNotSupported(schema.GroupResource{Resource: "serviceaccounts/token"}, r.Method)
	}
	signer := s.cfg.ServiceAccountTokens
	if signer == nil {
		return pathNotFound(r.URL.Path)
	}
	opts, out, body, err := s.beginWrite(r)
	if err != nil {
		return err
	}
	into := &authenticationv1.TokenRequest{}
	into.GetObjectKind().SetGroupVersionKind(tokenRequestKind)
	obj, _, err := s.decodeBody(r, body, into, opts.validation)
	if err != nil {
		return err
	}
	tr, ok := obj.(*authenticationv1.TokenRequest)
	if !ok {
		return apierrors.NewBadRequest(fmt.Sprintf("expected an authentication.k8s.io/v1 TokenRequest, got %T", obj))
	}
	if tr.Spec.ExpirationSeconds == nil {
		seconds := int64(serviceaccount.DefaultExpirationSeconds)
		tr.Spec.ExpirationSeconds = &seconds
	}
	if errs := validateTokenRequest(tr); len(errs) > 0 {
		return apierrors.NewInvalid(tokenRequestKind.GroupKind(), "", errs)
	}
	ctx := r.Context()
	saObj, _, err := s.objects.get(ctx, req.res, req.namespace, req.name)
	if err != nil {
		return err
	}
	sa := saObj.(*corev1.ServiceAccount)
	claims, err := s.bindToken(ctx, sa, tr.Spec.BoundObjectRef)
	if err != nil {
		return err
	}
	if len(tr.Spec.Audiences) == 0 {
		tr.Spec.Audiences = []string{serviceaccount.Issuer}
	}
	now := time.Now()
	requested := *tr.Spec.ExpirationSeconds
	lifetime := requested
	// Upstream's safe rollout of bound tokens: what the kubelet projects
	// for the admission plugin's volume lives a year, and warns after the
	// requested time.
	if claims.Pod != nil && requested == serviceaccount.WarnOnlyExpirationSeconds && isAPIAudience(tr.Spec.Audiences) {
		lifetime = serviceaccount.ExtendedExpirationSeconds
		claims.WarnAfter = now.Add(time.Duration(requested) * time.Second).Unix()
	}
	claims.Namespace = sa.Namespace
	claims.ServiceAccount = serviceaccount.Ref{Name: sa.Name, UID: string(sa.UID)}
	token, err := signer.Sign(&serviceaccount.Claims{
		Audience: tr.Spec.Audiences, Issuer: serviceaccount.Issuer,
		Subject:  serviceaccount.UserName(sa.Namespace, sa.Name),
		IssuedAt: now.Unix(), NotBefore: now.Unix(), Expiry: now.Add(time.Duration(lifetime) * time.Second).Unix(),
		ID: string(uuid.NewUUID()), Kubernetes: *claims,
	})
	if err != nil {
		return fmt.Errorf("failed to generate token: %w", err)
	}
	tr.Status = authenticationv1.TokenRequestStatus{
		Token:               token,
		ExpirationTimestamp: metav1.NewTime(now.Add(time.Duration(requested) * time.Second).Truncate(time.Second)),
	}
	tr.SetGroupVersionKind(tokenRequestKind)
	return s.writeObject(w, http.StatusCreated, out, tr)
}

// validateTokenRequest is upstream's ValidateTokenRequest.
func validateTokenRequest(tr *authenticationv1.TokenRequest) field.ErrorList {
	var errs field.ErrorList
	path := field.NewPath("spec", "expirationSeconds")
	seconds := *tr.Spec.ExpirationSeconds
	if seconds < serviceaccount.MinExpirationSeconds {
		errs = append(errs, field.Invalid(path, seconds, "may not specify a duration less than 10 minutes"))
	}
	if seconds > serviceaccount.MaxExpirationSeconds {
		errs = append(errs, field.Invalid(path, seconds, "may not specify a duration larger than 2^32 seconds"))
	}
	return errs
}

// bindToken checks a TokenRequest's boundObjectRef, as upstream: a Pod
// running as the account, a Secret or a Node, which must exist and carry
// the reference's UID if it names one. It returns the claims that name the
// bound object (a pod's node too, once it is scheduled).
func (s *Server) bindToken(ctx context.Context, sa *corev1.ServiceAccount, ref *authenticationv1.BoundObjectReference) (*serviceaccount.Private, error) {
	claims := &serviceaccount.Private{}
	if ref == nil {
		return claims, nil
	}
	gvk := schema.FromAPIVersionAndKind(ref.APIVersion, ref.Kind)
	var uid types.UID
	switch {
	case gvk.Group == "" && gvk.Kind == "Pod":
		obj, _, err := s.objects.get(ctx, s.resourceByPlural("pods"), sa.Namespace, ref.Name)
		if err != nil {
			return nil, err
		}
		pod := obj.(*corev1.Pod)
		if pod.Spec.ServiceAccountName != sa.Name {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("cannot bind token for serviceaccount %q to pod running with different serviceaccount name.", sa.Name))
		}
		uid = pod.UID
		claims.Pod = &serviceaccount.Ref{Name: pod.Name, UID: string(pod.UID)}
		if node := pod.Spec.NodeName; node != "" {
			claims.Node = &serviceaccount.Ref{Name: node}
			if obj, _, err := s.objects.get(ctx, s.resourceByPlural("nodes"), "", node); err == nil {
				claims.Node.UID = string(m(obj).GetUID())
			} else if !apierrors.IsNotFound(err) {
				return nil, err
			}
		}
	case gvk.Group == "" && gvk.Kind == "Secret":
		obj, _, err := s.objects.get(ctx, s.resourceByPlural("secrets"), sa.Namespace, ref.Name)
		if err != nil {
			return nil, err
		}
		uid = m(obj).GetUID()
		claims.Secret = &serviceaccount.Ref{Name: ref.Name, UID: string(uid)}
	case gvk.Group == "" && gvk.Kind == "Node":
		obj, _, err := s.objects.get(ctx, s.resourceByPlural("nodes"), "", ref.Name)
		if err != nil {
			return nil, err
		}
		uid = m(obj).GetUID()
		claims.Node = &serviceaccount.Ref{Name: ref.Name, UID: string(uid)}
	default:
		return nil, apierrors.NewBadRequest(fmt.Sprintf("cannot bind token to object of type %s", gvk.String()))
	}
	if ref.UID != "" && ref.UID != uid {
		return nil, apierrors.NewConflict(schema.GroupResource{Group: gvk.Group, Resource: gvk.Kind}, ref.Name,
			fmt.Errorf("the UID in the bound object reference (%s) does not match the UID in record. The object might have been deleted and then recreated", ref.UID))
	}
	return claims, nil
}

// isAPIAudience: every audience is the API server's.
func isAPIAudience(auds []string) bool {
	return len(auds) > 0 && !slices.ContainsFunc(auds, func(a string) bool { return a != serviceaccount.Issuer })
}
