package apiserver

import (
	"fmt"
	"mime"
	"net/http"
	"reflect"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// outputKind is what a client asked to receive for a read.
type outputKind int

const (
	outputObject   outputKind = iota // the objects themselves
	outputTable                      // meta.k8s.io/v1 Table (kubectl get)
	outputMetadata                   // meta.k8s.io/v1 PartialObjectMetadata(List)
)

// output is the negotiated response format.
type output struct {
	kind       outputKind
	mediaType  string
	serializer runtime.SerializerInfo
}

// mediaRange is one entry of an Accept header.
type mediaRange struct {
	typ    string
	params map[string]string
}

func parseAccept(h string) []mediaRange {
	if h == "" {
		return []mediaRange{{typ: "*/*"}}
	}
	var out []mediaRange
	for _, part := range strings.Split(h, ",") {
		t, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		out = append(out, mediaRange{typ: t, params: params})
	}
	return out
}

// negotiate picks the response format from the Accept header: the first
// acceptable entry wins. allowTable says the request may be answered with a
// Table or metadata (reads of resources).
func (s *Server) negotiate(r *http.Request, allowTable bool) (output, error) {
	for _, m := range parseAccept(r.Header.Get("Accept")) {
		typ := m.typ
		if typ == "*/*" || typ == "application/*" {
			typ = runtime.ContentTypeJSON
		}
		info, ok := runtime.SerializerInfoForMediaType(s.codecs.SupportedMediaTypes(), typ)
		if !ok {
			continue
		}
		out := output{kind: outputObject, mediaType: info.MediaType, serializer: info}
		if as := m.params["as"]; as != "" {
			if !allowTable || m.params["g"] != "meta.k8s.io" || (m.params["v"] != "v1" && m.params["v"] != "v1beta1") {
				continue
			}
			switch as {
			case "Table":
				if typ != runtime.ContentTypeJSON && typ != runtime.ContentTypeYAML {
					continue
				}
				out.kind = outputTable
			case "PartialObjectMetadata", "PartialObjectMetadataList":
				out.kind = outputMetadata
			default:
				continue
			}
			out.mediaType = fmt.Sprintf("%s;as=%s;g=meta.k8s.io;v=v1", info.MediaType, as)
		}
		return out, nil
	}
	return output{}, apierrors.NewGenericServerResponse(http.StatusNotAcceptable, "get", emptyGR, "",
		"only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf", 0, false)
}

// decodeBody decodes a request body of the resource's kind. strict reports
// unknown and duplicate fields as an error (fieldValidation=Strict); with
// warn, they come back as warnings instead.
func (s *Server) decodeBody(r *http.Request, body []byte, into runtime.Object, validation string) (runtime.Object, []string, error) {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		ct = runtime.ContentTypeJSON
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return nil, nil, unsupportedMediaType(ct)
	}
	info, ok := runtime.SerializerInfoForMediaType(s.codecs.SupportedMediaTypes(), mt)
	if !ok {
		return nil, nil, unsupportedMediaType(ct)
	}
	return s.decodeWith(info, body, into, validation)
}

func (s *Server) decodeWith(info runtime.SerializerInfo, body []byte, into runtime.Object, validation string) (runtime.Object, []string, error) {
	gvk := into.GetObjectKind().GroupVersionKind()
	dec := runtime.Decoder(info.Serializer)
	if validation != metav1.FieldValidationIgnore && info.StrictSerializer != nil {
		dec = info.StrictSerializer
	}
	obj, _, err := dec.Decode(body, &gvk, into)
	if err != nil && runtime.IsStrictDecodingError(err) {
		if validation == metav1.FieldValidationStrict {
			return nil, nil, apierrors.NewBadRequest(fmt.Sprintf("%s in version %q cannot be handled as a %s: %v", gvk.Kind, gvk.Version, gvk.Kind, err))
		}
		// Warn: the strict serializer decoded everything it could.
		var warnings []string
		if se, ok := runtime.AsStrictDecodingError(err); ok {
			for _, e := range se.Errors() {
				warnings = append(warnings, e.Error())
			}
		}
		return obj, warnings, nil
	}
	if err != nil {
		return nil, nil, badBody(into, body, err)
	}
	return obj, nil, nil
}

// badBody words a decode failure as upstream does ("Pod in version "v1"
// cannot be handled as a Pod: ..."), and, beyond upstream, names the field
// at fault where one is (upstream's message often does not say which).
func badBody(into runtime.Object, body []byte, err error) error {
	gvk := into.GetObjectKind().GroupVersionKind()
	msg := fmt.Sprintf("%s in version %q cannot be handled as a %s: %v", gvk.Kind, gvk.Version, gvk.Kind, err)
	path, ferr := locateDecodeError(body, reflect.TypeOf(into))
	if path == "" {
		return apierrors.NewBadRequest(msg)
	}
	st := apierrors.NewBadRequest(fmt.Sprintf("%s in version %q cannot be handled as a %s: %s: %v", gvk.Kind, gvk.Version, gvk.Kind, path, ferr))
	st.ErrStatus.Details = &metav1.StatusDetails{Kind: gvk.Kind, Causes: []metav1.StatusCause{{Type: metav1.CauseTypeFieldValueInvalid, Message: ferr.Error(), Field: path}}}
	return st
}

func unsupportedMediaType(ct string) error {
	return apierrors.NewGenericServerResponse(http.StatusUnsupportedMediaType, "", emptyGR, "",
		fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got %q)", ct), 0, false)
}
