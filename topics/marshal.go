package topics

import (
	"bytes"
	"encoding/json"
)

// Marshal is json.Marshal without its HTML escaping: <, > and & in strings
// and in owner_metadata stay one byte each rather than six (\u003c), so an
// event's size is what its parts' sizes say (HolderBytes), owner_metadata
// counts against its limit as what it holds, and records are no larger
// than they need to be. The JSON is the same to any reader.
func Marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
