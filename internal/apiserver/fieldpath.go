package apiserver

import (
	"encoding/json"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// locateDecodeError finds the field of a JSON or YAML body that cannot be
// decoded into a value of type t (a quantity like "1Gib", a string where a
// number belongs, ...), so the error can name it. It returns the field path
// (e.g. "spec.resources.requests.storage") and the error for that field alone,
// or "" when no single field is to blame.
func locateDecodeError(body []byte, t reflect.Type) (string, error) {
	jsonBody, err := yaml.YAMLToJSON(body)
	if err != nil {
		return "", nil
	}
	var doc interface{}
	if json.Unmarshal(jsonBody, &doc) != nil {
		return "", nil
	}
	return walkDecode(doc, t, "")
}

func walkDecode(v interface{}, t reflect.Type, path string) (string, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	// A type with its own decoding (Quantity, Time, IntOrString) is a leaf.
	if reflect.PointerTo(t).Implements(reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()) || (t.Kind() != reflect.Struct && t.Kind() != reflect.Map && t.Kind() != reflect.Slice) {
		raw, _ := json.Marshal(v)
		if err := json.Unmarshal(raw, reflect.New(t).Interface()); err != nil {
			return path, leafError(err)
		}
		return "", nil
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]interface{})
		if !ok {
			return "", nil
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ft, ok := fields[k]
			if !ok {
				continue
			}
			if p, err := walkDecode(obj[k], ft, join(path, k)); p != "" {
				return p, err
			}
		}
	case reflect.Map:
		obj, ok := v.(map[string]interface{})
		if !ok {
			return "", nil
		}
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if p, err := walkDecode(obj[k], t.Elem(), join(path, k)); p != "" {
				return p, err
			}
		}
	case reflect.Slice:
		arr, ok := v.([]interface{})
		if !ok || t.Elem().Kind() == reflect.Uint8 {
			return "", nil
		}
		for i, item := range arr {
			if p, err := walkDecode(item, t.Elem(), path+"["+strconv.Itoa(i)+"]"); p != "" {
				return p, err
			}
		}
	}
	return "", nil
}

// jsonFields maps a struct's JSON names (inline structs flattened) to types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") || (f.Anonymous && name == "") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					out[k] = v
				}
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// leafError strips encoding/json's Go-type wording from a leaf's error.
func leafError(err error) error {
	if ute, ok := err.(*json.UnmarshalTypeError); ok {
		return &fieldTypeError{want: ute.Type.Kind().String(), got: ute.Value}
	}
	return err
}

type fieldTypeError struct{ want, got string }

func (e *fieldTypeError) Error() string {
	return "expected " + e.want + ", got " + e.got
}
