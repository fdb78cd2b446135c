package apiserver

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/streaming"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/watch"
	restwatch "k8s.io/client-go/rest/watch"

	"github.com/moorage/moorage/internal/registry"
	"github.com/moorage/moorage/internal/store"
)

// BookmarkInterval is how often a watch that allows bookmarks gets one.
var BookmarkInterval = time.Minute

// watchStream writes watch events in the negotiated format.
type watchStream struct {
	s       *Server
	r       *http.Request
	res     *registry.Resource
	out     output
	enc     *restwatch.Encoder
	flusher http.Flusher
	sel     selectors
	headers bool // Table columns are sent with the first event only
	lastRev int64
}

// watch answers a watch request: the synthetic ADDED events the
// resourceVersion asks for, then every change, until the timeout.
func (s *Server) watch(w http.ResponseWriter, r *http.Request, req *request) error {
	out, err := s.negotiate(r, true)
	if err != nil {
		return err
	}
	sel, err := s.parseSelectors(r, req)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	rv := q.Get("resourceVersion")
	bookmarks := q.Get("allowWatchBookmarks") == "true"
	initial := rv == "" || rv == "0"
	if v := q.Get("sendInitialEvents"); v != "" {
		sie, _ := strconv.ParseBool(v)
		if q.Get("resourceVersionMatch") != string(metav1.ResourceVersionMatchNotOlderThan) || (sie && !bookmarks) {
			return apierrors.NewInvalid(metav1.SchemeGroupVersion.WithKind("ListOptions").GroupKind(), "", field.ErrorList{
				field.Forbidden(field.NewPath("sendInitialEvents"), "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and allowWatchBookmarks to true")})
		}
		initial = sie
	}
	var startRev int64
	if rv != "" && rv != "0" {
		if startRev, err = strconv.ParseInt(rv, 10, 64); err != nil {
			return apierrors.NewBadRequest(fmt.Sprintf("invalid resource version: %s", rv))
		}
	}
	timeout := time.Duration(30+rand.IntN(30)) * time.Minute
	if t := q.Get("timeoutSeconds"); t != "" {
		n, err := strconv.ParseInt(t, 10, 64)
		if err != nil || n < 0 {
			return apierrors.NewBadRequest(fmt.Sprintf("invalid timeoutSeconds %q", t))
		}
		timeout = time.Duration(n) * time.Second
	}

	ws := &watchStream{s: s, r: r, res: req.res, out: out, sel: sel, headers: true, lastRev: startRev}
	prefix := req.res.KeyPrefix(req.namespace)
	var initialObjs []runtime.Object
	if initial {
		objs, rev, _, err := s.listObjects(r, req.res, prefix, store.ListOptions{}, sel, 0)
		if err != nil {
			return err
		}
		if rev < startRev {
			rev = startRev
		}
		initialObjs, ws.lastRev = objs, rev
	}
	ctx := r.Context()
	wr, err := s.hubs.watch(ctx, req.res, prefix, ws.lastRev)
	if err != nil && !errors.Is(err, store.ErrCompacted) {
		return err
	}

	// From here on the response is a stream.
	info := out.serializer
	if info.StreamSerializer == nil {
		return apierrors.NewBadRequest("the requested media type does not support watch")
	}
	ct := out.mediaType
	if info.MediaType == runtime.ContentTypeProtobuf {
		ct = info.MediaType + ";stream=watch"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Transfer-Encoding", "chunked")
	w.Header().Set("Cache-Control", "no-cache, private")
	w.WriteHeader(http.StatusOK)
	ws.flusher, _ = w.(http.Flusher)
	ws.enc = restwatch.NewEncoder(streaming.NewEncoder(info.StreamSerializer.Framer.NewFrameWriter(w), info.StreamSerializer.Serializer), info.Serializer)
	ws.flush()

	if errors.Is(err, store.ErrCompacted) {
		return ws.sendGone()
	}
	for _, obj := range initialObjs {
		if err := ws.send(watch.Added, obj); err != nil {
			return nil
		}
	}
	if q.Get("sendInitialEvents") == "true" {
		if err := ws.bookmark(true); err != nil {
			return nil
		}
	}

	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var tick <-chan time.Time
	if bookmarks {
		t := time.NewTicker(BookmarkInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-deadline.C:
			return nil
		case <-ctx.Done():
			return nil
		case <-tick:
			if err := ws.bookmark(false); err != nil {
				return nil
			}
		case ev, ok := <-wr.Events:
			if !ok {
				werr := wr.Err()
				if errors.Is(werr, store.ErrSlowConsumer) {
					// Resume from the last event this client has seen.
					if wr, err = s.hubs.watch(ctx, req.res, prefix, ws.lastRev); err == nil {
						continue
					}
					if errors.Is(err, store.ErrCompacted) {
						return ws.sendGone()
					}
				}
				return nil
			}
			if err := ws.handle(ev); err != nil {
				return nil
			}
		}
	}
}

// handle turns one store event into at most one watch event, as seen through
// the watch's selectors: an object that stops matching is DELETED for it.
func (ws *watchStream) handle(ev store.Event) error {
	ws.lastRev = ev.KV.ModRevision
	// Shared with the other watches: read, never modified.
	d, err := ws.s.objects.decodeShared(ws.res, ev.KV)
	if err != nil {
		return err
	}
	obj := d.obj
	everything := ws.sel.label.Empty() && ws.sel.field.Empty()
	switch ev.Type {
	case store.Created:
		if d.matches(ws.sel) {
			return ws.send(watch.Added, obj)
		}
	case store.Deleted:
		if d.matches(ws.sel) {
			return ws.send(watch.Deleted, obj)
		}
	case store.Updated:
		if everything || ev.PrevKV == nil {
			if d.matches(ws.sel) {
				return ws.send(watch.Modified, obj)
			}
			return nil
		}
		prev, err := ws.s.objects.decodeShared(ws.res, *ev.PrevKV)
		if err != nil {
			return err
		}
		now, before := d.matches(ws.sel), prev.matches(ws.sel)
		switch {
		case now && before:
			return ws.send(watch.Modified, obj)
		case now:
			return ws.send(watch.Added, obj)
		case before:
			old := prev.obj.DeepCopyObject()
			m(old).SetResourceVersion(m(obj).GetResourceVersion())
			return ws.send(watch.Deleted, old)
		}
	}
	return nil
}

// send writes one event with obj in the negotiated form.
func (ws *watchStream) send(t watch.EventType, obj runtime.Object) error {
	switch ws.out.kind {
	case outputTable:
		table, err := ws.s.toTable(ws.r, ws.res, []runtime.Object{obj}, ws.headers)
		if err != nil {
			return err
		}
		table.ResourceVersion = m(obj).GetResourceVersion()
		ws.headers = false
		obj = table
	case outputMetadata:
		obj = toPartial(obj)
	default:
		if obj.GetObjectKind().GroupVersionKind() != ws.res.GVK {
			obj.GetObjectKind().SetGroupVersionKind(ws.res.GVK) // not a shared object: those have it
		}
	}
	if err := ws.enc.Encode(&watch.Event{Type: t, Object: obj}); err != nil {
		return err
	}
	ws.flush()
	return nil
}

// bookmark tells the client how far it has seen; initialEnd marks the end of
// a watch-list's initial events.
func (ws *watchStream) bookmark(initialEnd bool) error {
	var obj runtime.Object
	if ws.out.kind == outputObject {
		obj = ws.s.emptyLike(ws.res)
	} else {
		obj = &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: "meta.k8s.io/v1", Kind: "PartialObjectMetadata"}}
	}
	om := m(obj)
	om.SetResourceVersion(strconv.FormatInt(ws.lastRev, 10))
	if initialEnd {
		om.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
	}
	if err := ws.enc.Encode(&watch.Event{Type: watch.Bookmark, Object: obj}); err != nil {
		return err
	}
	ws.flush()
	return nil
}

// sendGone ends the watch with upstream's 410 Expired event.
func (ws *watchStream) sendGone() error {
	st := apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d", ws.lastRev)).Status()
	st.Kind, st.APIVersion = "Status", "v1"
	_ = ws.enc.Encode(&watch.Event{Type: watch.Error, Object: &st})
	ws.flush()
	return nil
}

func (ws *watchStream) flush() {
	if ws.flusher != nil {
		ws.flusher.Flush()
	}
}
