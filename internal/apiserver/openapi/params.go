package openapi

import "sort"

// parameter is an OpenAPI v3 parameter object.
type parameter struct {
	Description string      `json:"description,omitempty"`
	In          string      `json:"in"`
	Name        string      `json:"name"`
	Required    bool        `json:"required,omitempty"`
	Schema      *jsonSchema `json:"schema,omitempty"`
}

// paramDocs holds the type and description of every query parameter the
// generated operations use.
var paramDocs = map[string]struct{ typ, doc string }{
	"allowWatchBookmarks": {"boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers may send bookmarks at their discretion; clients must not assume they arrive at any interval. Ignored unless watch is true."},
	"continue":            {"string", "The continue token returned by a previous paged list call, used to fetch the next page of results. Only valid with the same query parameters as the call that returned it."},
	"dryRun":              {"string", "When present, modifications are not persisted. An invalid or unrecognized dryRun directive results in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed"},
	"fieldManager":        {"string", "fieldManager is a name associated with the actor or entity making these changes: at most 128 printable characters. Required for apply requests (application/apply-patch), optional for other patch types."},
	"fieldSelector":       {"string", "A selector to restrict the list of returned objects by their fields. Defaults to everything."},
	"fieldValidation": {"string", "fieldValidation instructs the server how to handle unknown or duplicate fields in the request (POST/PUT/PATCH). Valid values are: " +
		"- Ignore: unknown fields are silently dropped and all but the last duplicate field are ignored. " +
		"- Warn: each unknown or duplicate field is reported in a Warning response header; the request still succeeds if there are no other errors. " +
		"- Strict: the request fails with a BadRequest error listing every unknown and duplicate field."},
	"force":                {"boolean", "Force \"forces\" apply requests: the caller re-acquires fields owned by other managers. Must be unset for non-apply patch requests."},
	"gracePeriodSeconds":   {"integer", "The duration in seconds before the object should be deleted. Must be a non-negative integer; zero means delete immediately. When unset, the default grace period for the type is used."},
	"labelSelector":        {"string", "A selector to restrict the list of returned objects by their labels. Defaults to everything."},
	"limit":                {"integer", "limit is the maximum number of items to return in a list call. When more items exist, the list metadata carries a continue token for fetching the next page."},
	"orphanDependents":     {"boolean", "Deprecated: use propagationPolicy. Whether the dependent objects should be orphaned; either this or propagationPolicy may be set, not both."},
	"pretty":               {"string", "If 'true', then the output is pretty printed."},
	"propagationPolicy":    {"string", "Whether and how garbage collection is performed: 'Orphan' orphans the dependents, 'Background' lets the garbage collector delete them in the background, 'Foreground' deletes them in the foreground first. Either this or orphanDependents may be set, not both."},
	"resourceVersion":      {"string", "resourceVersion constrains which resource versions a request may be served from. Defaults to unset (the most recent data)."},
	"resourceVersionMatch": {"string", "resourceVersionMatch determines how resourceVersion is applied to list calls (NotOlderThan or Exact). Defaults to unset."},
	"sendInitialEvents":    {"boolean", "With watch=true, sendInitialEvents=true starts the watch stream with synthetic events for the current state of the objects, followed by a bookmark event. Requires resourceVersionMatch=NotOlderThan."},
	"timeoutSeconds":       {"integer", "Timeout for the list/watch call, in seconds. The call is ended after this duration regardless of any activity."},
	"watch":                {"boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion."},
}

var paramCache = map[string]*parameter{}

func init() {
	for name, d := range paramDocs {
		paramCache[name] = &parameter{Description: d.doc, In: "query", Name: name,
			Schema: &jsonSchema{Type: d.typ, UniqueItems: true}}
	}
}

// query returns the shared parameter objects for the given query parameters.
func query(names ...string) []*parameter {
	out := make([]*parameter, 0, len(names))
	for _, n := range names {
		out = append(out, paramCache[n])
	}
	return out
}

func pathParam(name, doc string) *parameter {
	return &parameter{Description: doc, In: "path", Name: name, Required: true,
		Schema: &jsonSchema{Type: "string", UniqueItems: true}}
}

var namespaceParam = pathParam("namespace", "object name and auth scope, such as for teams and projects")

// Parameter sets of the standard operations.
var (
	writeParams        = []string{"dryRun", "fieldManager", "fieldValidation"}
	patchParams        = []string{"dryRun", "fieldManager", "fieldValidation", "force"}
	deleteParams       = []string{"dryRun", "gracePeriodSeconds", "orphanDependents", "propagationPolicy"}
	listParams         = []string{"continue", "fieldSelector", "labelSelector", "limit", "resourceVersion", "resourceVersionMatch", "timeoutSeconds"}
	watchParams        = []string{"allowWatchBookmarks", "sendInitialEvents", "watch"}
	deleteCollectionPs = []string{"continue", "dryRun", "fieldSelector", "gracePeriodSeconds", "labelSelector", "limit",
		"orphanDependents", "propagationPolicy", "resourceVersion", "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds"}
)

func sortParams(ps []*parameter) {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
}
