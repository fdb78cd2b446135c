package openapi

import (
	"net/http"
	"sync"

	openapi_v2 "github.com/google/gnostic-models/openapiv2"
	"google.golang.org/protobuf/proto"
)

// kubectl 1.27 and 1.28 ask for /openapi/v2 (gnostic protobuf) before
// anything else in explain, create -f and apply -f, and give up on a 404.
// Given any valid v2 document they go on to use the v3 documents, so moorage
// serves an empty one: v3 is where the schemas are.
var emptyV2 = sync.OnceValues(func() ([]byte, error) {
	doc, err := openapi_v2.ParseDocument([]byte(`{"swagger":"2.0","info":{"title":"Kubernetes","version":"unversioned"},"paths":{}}`))
	if err != nil {
		return nil, err
	}
	return proto.Marshal(doc)
})

// v2MediaType is the type kubectl accepts (the ".v1.0" form; "@v1.0" makes
// it fail to parse the type).
const v2MediaType = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"

func serveEmptyV2(w http.ResponseWriter) {
	body, err := emptyV2()
	if err != nil {
		writeStatus(w, http.StatusInternalServerError, "InternalError", err.Error())
		return
	}
	w.Header().Set("Content-Type", v2MediaType)
	_, _ = w.Write(body)
}
