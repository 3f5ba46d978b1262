package apiserver

import (
	"errors"
	"fmt"
	"regexp"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// MaxRequestBytes bounds one request, decoded: the largest exec request a
// waiter takes (4 MiB of argv and env) and its stdin fit, a runaway client
// does not. connect refuses a larger one with ResourceExhausted.
const MaxRequestBytes = 8 << 20

// clearingCodec is protobuf's binary or JSON codec, as connect's own, but
// it overwrites the request bytes once decoded (an ExecSecure request
// carries secrets) and never quotes the request in an error.
//
// What it cannot clear: the decoded message itself (the sandbox clears
// the ExecSecure env values once the command has them), bytes still in the HTTP server's read buffer
// and the kernel's socket buffers, and, for JSON only, the base64 strings
// protojson makes of bytes values while decoding: Go strings stay in the
// heap until collected. Secrets are best sent as protobuf (the Go client
// does).
type clearingCodec struct {
	name string
	json bool
}

var (
	_ connect.Codec = clearingCodec{}

	// codecs are the ones the server speaks: connect's names.
	codecs = []clearingCodec{{name: "proto"}, {name: "json", json: true}, {name: "json; charset=utf-8", json: true}}
)

func (c clearingCodec) Name() string { return c.name }

// IsBinary tells connect the codec is not text (its GET support uses it).
func (c clearingCodec) IsBinary() bool { return !c.json }

func (c clearingCodec) Marshal(message any) ([]byte, error) {
	m, ok := message.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", message)
	}
	if c.json {
		return protojson.Marshal(m)
	}
	return proto.Marshal(m)
}

// jsonPosition is where protojson's error points; the rest of its message
// may quote the request (a secret's base64 among it).
var jsonPosition = regexp.MustCompile(`\(line \d+:\d+\)`)

func (c clearingCodec) Unmarshal(data []byte, message any) error {
	defer clear(data)
	m, ok := message.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a protobuf message", message)
	}
	if c.json {
		if len(data) == 0 {
			return errors.New("malformed JSON request: empty body (want a JSON object, {} for none)")
		}
		// Unknown fields are dropped, as connect's own codec does: a client
		// of a newer schema still talks to this shim.
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, m); err != nil {
			at := jsonPosition.FindString(err.Error())
			if at == "" {
				at = "(position unknown)"
			}
			return fmt.Errorf("malformed JSON request for %s at %s; details are withheld since they may quote a secret", m.ProtoReflect().Descriptor().FullName(), at)
		}
		return nil
	}
	if err := proto.Unmarshal(data, m); err != nil {
		return fmt.Errorf("malformed protobuf request for %s: not a valid encoding of it", m.ProtoReflect().Descriptor().FullName())
	}
	return nil
}
