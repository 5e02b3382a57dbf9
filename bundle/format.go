// Package bundle carries an air-gapped site's link on a stick: signed files
// with the site's blueprints, cloud outputs and artifacts going down, and
// its status, telemetry and events coming back up.
//
// A bundle is a tar stream. Every entry is written as it is read from its
// store (nothing is held in memory) and hashed on the way; the last two
// entries are MANIFEST.json, listing every entry with its size and sha256,
// and MANIFEST.sig, an ed25519 signature over the format and the manifest:
//
//	artifacts/<sha256>        an artifact's content, once per content
//	kv/<bucket>/<key>         a KV value exactly as the hub stores it (signed)
//	uplink/<stream>.jsonl     a site stream's messages, one JSON line each
//	MANIFEST.json
//	MANIFEST.sig              {"format", "signer", "sig"}
//
// Reading verifies the whole file (every hash, every listed entry present
// once, nothing unlisted, the signature by a trusted key) before anything
// is written anywhere, so a tampered, truncated or foreign file changes
// nothing; the second pass that writes checks every hash again.
package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nkeys"
)

// Formats, also the signatures' domain separators: a downlink bundle never
// opens as an uplink one, and no other signature of these keys verifies as
// either.
const (
	Format       = "alpha-bundle/v1"
	UplinkFormat = "alpha-uplink-bundle/v1"
)

// Names of the trailer entries.
const (
	ManifestName  = "MANIFEST.json"
	SignatureName = "MANIFEST.sig"
)

// Kinds of entry.
const (
	KindArtifact = "artifact"
	KindKV       = "kv"
	KindUplink   = "uplink"
)

// Errors a reader or importer returns, wrapped with the detail.
var (
	ErrTruncated = errors.New("bundle is truncated or incomplete")
	ErrTampered  = errors.New("bundle content does not match its signed manifest")
	ErrSignature = errors.New("bundle signature is not valid")
	ErrUntrusted = errors.New("bundle signer is not trusted here")
	ErrOtherSite = errors.New("bundle is for another site")
	ErrOlder     = errors.New("bundle is older than what the site already has")
	ErrNotBundle = errors.New("not an alpha bundle")
)

// Manifest describes a bundle; it is what is signed.
type Manifest struct {
	Format  string    `json:"format"`
	Site    string    `json:"site"`
	Tenant  string    `json:"tenant,omitempty"`
	Created time.Time `json:"created"`
	// Since is the hub revision the export started after (0: everything).
	Since uint64 `json:"since,omitempty"`
	// Revisions are the last sequence of each hub store at export
	// (blueprints, cloud): how new the bundle is.
	Revisions map[string]uint64 `json:"revisions,omitempty"`
	// TrustedKeys and Revocations are the tenant's publisher and hub keys
	// and its revoked user keys at export, for the site's record: a site
	// trusts only the keys of its own site bundle.
	TrustedKeys []string `json:"trustedKeys,omitempty"`
	Revocations []string `json:"revocations,omitempty"`
	Entries     []Entry  `json:"entries"`
}

// Entry is one file of the bundle.
type Entry struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Bucket is the KV bucket (KindKV) or the site stream (KindUplink).
	Bucket string `json:"bucket,omitempty"`
	// Key is the KV key.
	Key string `json:"key,omitempty"`
	// Revision is the hub's revision of a KV value.
	Revision uint64 `json:"revision,omitempty"`
	// Names are the object names an artifact's content is stored under.
	Names []string `json:"names,omitempty"`
	// First and Last are the site stream sequences an uplink entry covers.
	First uint64 `json:"first,omitempty"`
	Last  uint64 `json:"last,omitempty"`
	// Messages counts an uplink entry's lines.
	Messages int `json:"messages,omitempty"`
	// Created is the creation time (Unix nanoseconds) of the site stream
	// an uplink entry's sequences number: a stream made again (a new
	// store) numbers from 1 again. 0 in bundles from before it.
	Created int64 `json:"created,omitempty"`
}

// signature is MANIFEST.sig.
type signature struct {
	Format string `json:"format"`
	Signer string `json:"signer"`
	Sig    []byte `json:"sig"`
}

func signedBytes(format string, manifest []byte) []byte {
	return append([]byte(format+"\n"), manifest...)
}

// Writer writes a bundle: entries as they come, then the signed manifest.
type Writer struct {
	tw       *tar.Writer
	m        Manifest
	progress *Progress
}

// NewWriter starts a bundle described by m (its entries are filled in by
// Add) on w.
func NewWriter(w io.Writer, m Manifest, p *Progress) *Writer {
	m.Entries = nil
	if m.Created.IsZero() {
		m.Created = Now()
	}
	return &Writer{tw: tar.NewWriter(w), m: m, progress: p}
}

// Add streams size bytes from r as entry e, hashing them on the way; the
// hash and size go into the manifest.
func (w *Writer) Add(e Entry, size int64, r io.Reader) error {
	if err := w.tw.WriteHeader(w.header(e.Name, size)); err != nil {
		return fmt.Errorf("bundle: entry %s: %w", e.Name, err)
	}
	h := sha256.New()
	n, err := io.Copy(w.tw, io.TeeReader(io.LimitReader(r, size), io.MultiWriter(h, w.progress.bytes())))
	if err != nil {
		return fmt.Errorf("bundle: entry %s: %w", e.Name, err)
	}
	if n != size {
		return fmt.Errorf("bundle: entry %s: %d bytes, expected %d", e.Name, n, size)
	}
	e.Size, e.SHA256 = size, hex.EncodeToString(h.Sum(nil))
	w.m.Entries = append(w.m.Entries, e)
	if e.Kind == KindArtifact {
		w.progress.artifact()
	}
	return nil
}

// header is an entry's tar header. Nothing in it but the name and size
// is read back, and those are checked against the signed manifest;
// whole seconds keep it plain ustar (no unsigned PAX records).
func (w *Writer) header(name string, size int64) *tar.Header {
	return &tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: w.m.Created.Truncate(time.Second), Typeflag: tar.TypeReg}
}

// Manifest is the manifest so far.
func (w *Writer) Manifest() *Manifest { return &w.m }

// Close signs the manifest with the seed of an nkey and writes the trailer.
func (w *Writer) Close(seed []byte) (*Manifest, error) {
	kp, err := nkeys.FromSeed(bytes.TrimSpace(seed))
	if err != nil {
		return nil, fmt.Errorf("bundle: signing key: %w", err)
	}
	signer, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	mb, err := json.MarshalIndent(w.m, "", "  ")
	if err != nil {
		return nil, err
	}
	sig, err := kp.Sign(signedBytes(w.m.Format, mb))
	if err != nil {
		return nil, err
	}
	sb, _ := json.Marshal(signature{Format: w.m.Format, Signer: signer, Sig: sig})
	for _, f := range []struct {
		name string
		b    []byte
	}{{ManifestName, mb}, {SignatureName, sb}} {
		if err := w.tw.WriteHeader(w.header(f.name, int64(len(f.b)))); err != nil {
			return nil, err
		}
		if _, err := w.tw.Write(f.b); err != nil {
			return nil, err
		}
	}
	if err := w.tw.Close(); err != nil {
		return nil, err
	}
	w.progress.done()
	return &w.m, nil
}

// Verify reads the whole bundle at path and returns its manifest if the
// signature is by one of trusted (public nkeys), the format is format,
// every listed entry is present exactly once with its size and sha256, and
// nothing else is in the file. It writes nothing.
func Verify(path, format string, trusted []string) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	type seen struct {
		size int64
		sum  string
	}
	got := map[string]seen{}
	var mb, sb []byte
	for {
		hd, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if len(got) == 0 && mb == nil {
				return nil, fmt.Errorf("%w: %s: %v", ErrNotBundle, path, err)
			}
			return nil, fmt.Errorf("%w: %s: %v", ErrTruncated, path, err)
		}
		switch hd.Name {
		case ManifestName, SignatureName:
			b, err := io.ReadAll(io.LimitReader(tr, 64<<20))
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %s: %v", ErrTruncated, path, hd.Name, err)
			}
			if hd.Name == ManifestName {
				mb = b
			} else {
				sb = b
			}
			continue
		}
		if mb != nil {
			return nil, fmt.Errorf("%w: entry %q after the manifest", ErrTampered, hd.Name)
		}
		if _, dup := got[hd.Name]; dup {
			return nil, fmt.Errorf("%w: entry %q appears twice", ErrTampered, hd.Name)
		}
		h := sha256.New()
		n, err := io.Copy(h, tr)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: entry %s: %v", ErrTruncated, path, hd.Name, err)
		}
		got[hd.Name] = seen{n, hex.EncodeToString(h.Sum(nil))}
	}
	if mb == nil || sb == nil {
		return nil, fmt.Errorf("%w: %s has no signed manifest (%d entries read)", ErrTruncated, path, len(got))
	}
	var sig signature
	if err := json.Unmarshal(sb, &sig); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrSignature, SignatureName, err)
	}
	if sig.Format != format {
		return nil, fmt.Errorf("%w: format %q, want %q", ErrNotBundle, sig.Format, format)
	}
	ok := false
	for _, k := range trusted {
		ok = ok || k == sig.Signer
	}
	if !ok {
		return nil, fmt.Errorf("%w: signer %q (trusted: %s)", ErrUntrusted, sig.Signer, strings.Join(trusted, ", "))
	}
	kp, err := nkeys.FromPublicKey(sig.Signer)
	if err != nil {
		return nil, fmt.Errorf("%w: signer %q: %v", ErrSignature, sig.Signer, err)
	}
	if err := kp.Verify(signedBytes(format, mb), sig.Sig); err != nil {
		return nil, fmt.Errorf("%w: manifest signed by %s: %v", ErrSignature, sig.Signer, err)
	}
	var m Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrTampered, ManifestName, err)
	}
	if m.Format != format {
		return nil, fmt.Errorf("%w: manifest format %q, want %q", ErrNotBundle, m.Format, format)
	}
	listed := map[string]bool{}
	for _, e := range m.Entries {
		s, ok := got[e.Name]
		if !ok {
			return nil, fmt.Errorf("%w: entry %s is listed in the manifest but missing", ErrTruncated, e.Name)
		}
		if s.size != e.Size || s.sum != e.SHA256 {
			return nil, fmt.Errorf("%w: entry %s has %d bytes sha256 %s, the manifest says %d bytes sha256 %s",
				ErrTampered, e.Name, s.size, s.sum, e.Size, e.SHA256)
		}
		listed[e.Name] = true
	}
	for name := range got {
		if !listed[name] {
			return nil, fmt.Errorf("%w: entry %s is not in the manifest", ErrTampered, name)
		}
	}
	return &m, nil
}

// Each reads the bundle at path again and calls fn for every entry m
// lists, in file order, with a reader of its content. The reader fails
// at its end if the content is not what the manifest says (the file
// changed since Verify): fn must read to EOF before it commits anything.
func Each(path string, m *Manifest, fn func(e Entry, r io.Reader) error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	defer f.Close()
	byName := map[string]Entry{}
	for _, e := range m.Entries {
		byName[e.Name] = e
	}
	tr := tar.NewReader(f)
	for {
		hd, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %v", ErrTruncated, err)
		}
		e, ok := byName[hd.Name]
		if !ok {
			continue // the trailer
		}
		r := &checked{r: tr, h: sha256.New(), e: e}
		if err := fn(e, r); err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			return err
		}
	}
}

// checked passes content through and fails at EOF unless it matched the
// entry's size and sha256.
type checked struct {
	r io.Reader
	h hash.Hash
	n int64
	e Entry
}

func (c *checked) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	if err == io.EOF {
		if sum := hex.EncodeToString(c.h.Sum(nil)); c.n != c.e.Size || sum != c.e.SHA256 {
			return n, fmt.Errorf("%w: entry %s changed since it was verified (sha256 %s, want %s)", ErrTampered, c.e.Name, sum, c.e.SHA256)
		}
	}
	return n, err
}

// ReadAll reads a small entry whole, checked.
func ReadAll(r io.Reader, e Entry) ([]byte, error) {
	if e.Size > 8<<20 {
		return nil, fmt.Errorf("bundle: entry %s: %d bytes is too large to read whole", e.Name, e.Size)
	}
	return io.ReadAll(r)
}

// Peek reads a bundle's manifest WITHOUT verifying anything, to learn whose
// keys to verify it with (an uplink bundle names its site and tenant).
func Peek(path string) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hd, err := tr.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("%w: %s has no manifest", ErrTruncated, path)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrTruncated, path, err)
		}
		if hd.Name != ManifestName {
			continue
		}
		var m Manifest
		if err := json.NewDecoder(io.LimitReader(tr, 64<<20)).Decode(&m); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrTampered, ManifestName, err)
		}
		return &m, nil
	}
}
