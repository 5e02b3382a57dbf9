package sign_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

func TestVerify(t *testing.T) {
	seed, pub, err := sign.NewPublisher()
	check.NoError(t, err)
	other, _, err := sign.NewPublisher()
	check.NoError(t, err)
	bp := []byte("apiVersion: alpha/v1\nkind: Blueprint\n")
	env1, err := sign.Sign(seed, "a.n1", 1, bp)
	check.NoError(t, err)
	env2, err := sign.Sign(seed, "a.n1", 2, append(bp, '#'))
	check.NoError(t, err)

	dir := t.TempDir()
	v, err := sign.NewVerifier([]string{pub}, dir)
	check.NoError(t, err)
	got, err := v.Verify("a.n1", 1, env1)
	check.NoError(t, err)
	if !bytes.Equal(got, bp) {
		t.Fatalf("blueprint %q, want %q", got, bp)
	}
	// The same envelope again (a restart re-reads the key) is fine.
	_, err = v.Verify("a.n1", 1, env1)
	check.NoError(t, err)
	_, err = v.Verify("a.n1", 2, env2)
	check.NoError(t, err)

	untrusted, err := sign.Sign(other, "a.n1", 3, bp)
	check.NoError(t, err)
	var e sign.Envelope
	check.NoError(t, json.Unmarshal(env2, &e))
	e.Payload = bytes.Replace(e.Payload, []byte(`"seq":2`), []byte(`"seq":9`), 1)
	tampered, _ := json.Marshal(e)
	forA2, err := sign.Sign(seed, "a.n2", 4, bp)
	check.NoError(t, err)

	for _, tc := range []struct {
		name  string
		value []byte
		want  error
	}{
		{"unsigned", bp, sign.ErrUnsigned},
		{"untrusted signer", untrusted, sign.ErrUntrusted},
		{"tampered payload", tampered, sign.ErrSignature},
		{"signed for another node", forA2, sign.ErrWrongKey},
		{"older revision replayed", env1, sign.ErrReplay},
		{"delete (no value)", nil, sign.ErrUnsignedDelete},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify("a.n1", 10, tc.value)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}

	// The high-water mark survives a restart of the agent.
	v2, err := sign.NewVerifier([]string{pub}, dir)
	check.NoError(t, err)
	if _, err := v2.Verify("a.n1", 11, env1); !errors.Is(err, sign.ErrReplay) {
		t.Fatalf("after restart, replay: got %v", err)
	}
	_, err = v2.Verify("a.n1", 2, env2)
	check.NoError(t, err)
}

// Cloud outputs use the same envelope under their own format: an outputs
// verifier opens only outputs signed by the hub's key for that exact
// site.node.config, and a blueprint envelope never passes as outputs (nor
// the other way round), even signed by the same key.
func TestOutputsFormatIsSeparate(t *testing.T) {
	seed, pub, err := sign.NewPublisher()
	check.NoError(t, err)
	status := []byte(`{"phase":"applied","outputs":{"bucket_name":"alpha-a"}}`)
	outs, err := sign.SignAs(sign.OutputsFormat, seed, "a.n1.logs", 1, status)
	check.NoError(t, err)
	asBlueprint, err := sign.Sign(seed, "a.n1.logs", 2, status)
	check.NoError(t, err)
	forN2, err := sign.SignAs(sign.OutputsFormat, seed, "a.n2.logs", 3, status)
	check.NoError(t, err)

	v, err := sign.NewOutputsVerifier([]string{pub}, t.TempDir())
	check.NoError(t, err)
	got, err := v.Verify("a.n1.logs", 1, outs)
	check.NoError(t, err)
	check.Equal(t, string(got), string(status))
	for _, tc := range []struct {
		name  string
		value []byte
		want  error
	}{
		{"blueprint envelope offered as outputs", asBlueprint, sign.ErrUnsigned},
		{"outputs of another node", forN2, sign.ErrWrongKey},
		{"plain status", status, sign.ErrUnsigned},
	} {
		if _, err := v.Verify("a.n1.logs", 5, tc.value); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}

	bv, err := sign.NewVerifier([]string{pub}, t.TempDir())
	check.NoError(t, err)
	if _, err := bv.Verify("a.n1.logs", 1, outs); !errors.Is(err, sign.ErrUnsigned) {
		t.Fatalf("outputs envelope offered as a blueprint: got %v", err)
	}
}

// BenchmarkVerify measures what a signature check adds to each revision an
// agent takes (a 4 KiB blueprint).
func BenchmarkVerify(b *testing.B) {
	seed, pub, err := sign.NewPublisher()
	check.NoError(b, err)
	v, err := sign.NewVerifier([]string{pub}, b.TempDir())
	check.NoError(b, err)
	bp := bytes.Repeat([]byte("x"), 4096)
	envs := make([][]byte, b.N)
	for i := range envs {
		envs[i], err = sign.Sign(seed, "a.n1", uint64(i+1), bp)
		check.NoError(b, err)
	}
	b.ResetTimer()
	for i := range b.N {
		if _, err := v.Verify("a.n1", uint64(i+1), envs[i]); err != nil {
			b.Fatal(err)
		}
	}
}
