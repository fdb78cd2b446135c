package apiserver

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"

	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/moorage/moorage/internal/registry"
)

// discoveryDocs are the discovery answers, built once: they change only with
// the registry.
type discoveryDocs struct {
	legacyAPI    []byte                         // GET /api
	legacyGroups []byte                         // GET /apis
	groups       map[string][]byte              // GET /apis/<group>
	resources    map[schema.GroupVersion][]byte // GET /api/v1, /apis/<g>/<v>
	aggregated   map[aggregatedKey][]byte       // GET /api and /apis as APIGroupDiscoveryList
	resourceList map[schema.GroupVersion][]metav1.APIResource
}

// aggregatedKey names one aggregated discovery document: of /api (core) or
// /apis, in apidiscovery.k8s.io v2 or v2beta1 (kubectl 1.27-1.29 ask for
// v2beta1 only).
type aggregatedKey struct {
	core    bool
	version string
}

var aggregatedVersions = []string{"v2", "v2beta1"}

func (s *Server) buildDiscovery() error {
	d := discoveryDocs{
		groups:       map[string][]byte{},
		resources:    map[schema.GroupVersion][]byte{},
		aggregated:   map[aggregatedKey][]byte{},
		resourceList: map[schema.GroupVersion][]metav1.APIResource{},
	}
	for _, r := range s.reg.All() {
		gv := r.GVK.GroupVersion()
		d.resourceList[gv] = append(d.resourceList[gv], apiResources(r)...)
	}
	var err error
	if d.legacyAPI, err = json.Marshal(metav1.APIVersions{
		TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"},
		ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: s.cfg.ExternalAddress}},
	}); err != nil {
		return err
	}
	groupList := metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}}
	aggCore := apidiscoveryv2.APIGroupDiscoveryList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupDiscoveryList", APIVersion: "apidiscovery.k8s.io/v2"}}
	aggGroups := aggCore
	for _, gv := range s.reg.GroupVersions() {
		list := metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv.String(), APIResources: d.resourceList[gv]}
		if d.resources[gv], err = json.Marshal(list); err != nil {
			return err
		}
		agg := apidiscoveryv2.APIGroupDiscovery{ObjectMeta: metav1.ObjectMeta{Name: gv.Group},
			Versions: []apidiscoveryv2.APIVersionDiscovery{{Version: gv.Version, Resources: aggregatedResources(s.reg, gv), Freshness: apidiscoveryv2.DiscoveryFreshnessCurrent}}}
		if gv.Group == "" {
			aggCore.Items = append(aggCore.Items, agg)
			continue
		}
		aggGroups.Items = append(aggGroups.Items, agg)
		gvd := metav1.GroupVersionForDiscovery{GroupVersion: gv.String(), Version: gv.Version}
		group := metav1.APIGroup{Name: gv.Group, Versions: []metav1.GroupVersionForDiscovery{gvd}, PreferredVersion: gvd}
		groupList.Groups = append(groupList.Groups, group)
		group.TypeMeta = metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}
		if d.groups[gv.Group], err = json.Marshal(group); err != nil {
			return err
		}
	}
	if d.legacyGroups, err = json.Marshal(groupList); err != nil {
		return err
	}
	for _, v := range aggregatedVersions {
		aggCore.APIVersion, aggGroups.APIVersion = "apidiscovery.k8s.io/"+v, "apidiscovery.k8s.io/"+v
		if d.aggregated[aggregatedKey{true, v}], err = json.Marshal(aggCore); err != nil {
			return err
		}
		if d.aggregated[aggregatedKey{false, v}], err = json.Marshal(aggGroups); err != nil {
			return err
		}
	}
	s.discovery = d
	return nil
}

// apiResources lists a resource and its subresources for legacy discovery.
func apiResources(r *registry.Resource) []metav1.APIResource {
	main := metav1.APIResource{
		Name: r.Plural, SingularName: r.Singular, Namespaced: r.Namespaced, Kind: r.GVK.Kind,
		Verbs: r.Verbs(), ShortNames: r.ShortNames, Categories: r.Categories,
		StorageVersionHash: storageVersionHash(r.GVK),
	}
	out := []metav1.APIResource{main}
	for _, sub := range subresources(r) {
		out = append(out, metav1.APIResource{Name: r.Plural + "/" + sub.name, Namespaced: r.Namespaced,
			Group: sub.kind.Group, Version: sub.kind.Version, Kind: sub.kind.Kind, Verbs: sub.verbs})
	}
	return out
}

type subresourceInfo struct {
	name  string
	kind  schema.GroupVersionKind
	verbs []string
}

func subresources(r *registry.Resource) []subresourceInfo {
	var out []subresourceInfo
	if r.Plural == "namespaces" {
		out = append(out, subresourceInfo{"finalize", r.GVK, []string{"update"}})
	}
	if r.Plural == "pods" && r.GVK.Group == "" {
		out = append(out,
			subresourceInfo{"attach", schema.GroupVersionKind{Version: "v1", Kind: "PodAttachOptions"}, []string{"create", "get"}},
			subresourceInfo{"binding", schema.GroupVersionKind{Version: "v1", Kind: "Binding"}, []string{"create"}},
			subresourceInfo{"exec", schema.GroupVersionKind{Version: "v1", Kind: "PodExecOptions"}, []string{"create", "get"}},
			subresourceInfo{"log", schema.GroupVersionKind{Version: "v1", Kind: "Pod"}, []string{"get"}},
			subresourceInfo{"portforward", schema.GroupVersionKind{Version: "v1", Kind: "PodPortForwardOptions"}, []string{"create", "get"}})
	}
	if r.Plural == "serviceaccounts" && r.GVK.Group == "" {
		out = append(out, subresourceInfo{"token", tokenRequestKind, []string{"create"}})
	}
	if r.Scale != nil {
		out = append(out, subresourceInfo{"scale", schema.GroupVersionKind{Group: "autoscaling", Version: "v1", Kind: "Scale"}, []string{"get", "patch", "update"}})
	}
	for _, sub := range r.Subresources {
		out = append(out, subresourceInfo{sub.Name, r.GVK, []string{"get", "patch", "update"}})
	}
	if r.Status {
		out = append(out, subresourceInfo{"status", r.GVK, []string{"get", "patch", "update"}})
	}
	return out
}

func aggregatedResources(reg *registry.Registry, gv schema.GroupVersion) []apidiscoveryv2.APIResourceDiscovery {
	var out []apidiscoveryv2.APIResourceDiscovery
	for _, r := range reg.All() {
		if r.GVK.GroupVersion() != gv {
			continue
		}
		scope := apidiscoveryv2.ScopeCluster
		if r.Namespaced {
			scope = apidiscoveryv2.ScopeNamespace
		}
		kind := r.GVK
		d := apidiscoveryv2.APIResourceDiscovery{
			Resource: r.Plural, ResponseKind: &metav1.GroupVersionKind{Group: kind.Group, Version: kind.Version, Kind: kind.Kind},
			Scope: scope, SingularResource: r.Singular, Verbs: r.Verbs(), ShortNames: r.ShortNames, Categories: r.Categories,
		}
		for _, sub := range subresources(r) {
			d.Subresources = append(d.Subresources, apidiscoveryv2.APISubresourceDiscovery{
				Subresource: sub.name, Verbs: sub.verbs,
				ResponseKind: &metav1.GroupVersionKind{Group: sub.kind.Group, Version: sub.kind.Version, Kind: sub.kind.Kind},
			})
		}
		out = append(out, d)
	}
	return out
}

// storageVersionHash is a short hash of the stored kind, as discovery shows.
func storageVersionHash(gvk schema.GroupVersionKind) string {
	sum := sha256.Sum256([]byte(gvk.Group + "/" + gvk.Version + "/" + gvk.Kind))
	return base64.StdEncoding.EncodeToString(sum[:8])
}

// serveDiscovery answers the discovery paths; it reports false for others.
func (s *Server) serveDiscovery(w http.ResponseWriter, r *http.Request, parts []string) bool {
	if r.Method != http.MethodGet {
		return false
	}
	write := func(doc []byte, ct string) bool {
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Cache-Control", "no-cache, private")
		w.Header().Set("Vary", "Accept")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(doc)
		return true
	}
	switch {
	case len(parts) == 1 && (parts[0] == "api" || parts[0] == "apis"):
		core := parts[0] == "api"
		if v := aggregatedVersion(r.Header.Get("Accept")); v != "" {
			return write(s.discovery.aggregated[aggregatedKey{core, v}], "application/json;g=apidiscovery.k8s.io;v="+v+";as=APIGroupDiscoveryList")
		}
		if core {
			return write(s.discovery.legacyAPI, "application/json")
		}
		return write(s.discovery.legacyGroups, "application/json")
	case len(parts) == 2 && parts[0] == "api":
		if doc, ok := s.discovery.resources[schema.GroupVersion{Version: parts[1]}]; ok {
			return write(doc, "application/json")
		}
	case len(parts) == 2 && parts[0] == "apis":
		if doc, ok := s.discovery.groups[parts[1]]; ok {
			return write(doc, "application/json")
		}
	case len(parts) == 3 && parts[0] == "apis":
		if doc, ok := s.discovery.resources[schema.GroupVersion{Group: parts[1], Version: parts[2]}]; ok {
			return write(doc, "application/json")
		}
	}
	return false
}

// aggregatedVersion picks the aggregated discovery version the client asked
// for first, or "" when it prefers (or only takes) the legacy documents.
func aggregatedVersion(accept string) string {
	for _, m := range parseAccept(accept) {
		if m.params["as"] == "" {
			return "" // plain JSON (or anything) first: legacy discovery
		}
		if m.params["as"] == "APIGroupDiscoveryList" && m.params["g"] == "apidiscovery.k8s.io" && slices.Contains(aggregatedVersions, m.params["v"]) {
			return m.params["v"]
		}
	}
	return ""
}
