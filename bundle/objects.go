package bundle

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/natsutil"
)

// Object store transfers with bounded memory. nats.go's ObjectStore.Get
// pushes chunks into a subscription that buffers up to its pending limit
// (64 MB) while the reader writes to disk, and ObjectStore.Put keeps up to
// 4000 chunks (500 MB) in flight, which the server queues in memory: a
// 600 MB artifact cost the exporter 175 MiB and the importing leaf 229 MiB
// of RSS (measured). These read through a pull consumer that holds at
// most readAhead bytes, and write with at most putWindow chunks unacked,
// in the object store's own layout (chunks on $O.<bucket>.C.<nuid>, the
// meta on $O.<bucket>.M.<base64url name>, rolled up), so readers and
// writers of either kind interoperate.
const (
	chunkSize = 128 << 10
	readAhead = 2 << 20
	putWindow = 16
	// chunkStall fails a read that got no chunk for this long. Without
	// it, a read from a server that died waits as long as the client
	// reconnects (for ever, with MaxReconnects -1): the iterator only
	// waits through a disconnect. A stream that moves (10 s pulls notice
	// it in 10 s, then up to ReadResets tries, ~33 s) resumes well within.
	chunkStall = time.Minute
	readExpiry = 10 * time.Second
)

// objectReader streams an object's chunks.
type objectReader struct {
	ctx    context.Context
	what   string // "object <name> of bucket <bucket>", for errors
	it     jetstream.MessagesContext
	left   uint64
	buf    []byte
	cancel context.CancelFunc
}

// openObject reads object info of bucket (stream OBJ_<bucket>) in js.
func openObject(ctx context.Context, js jetstream.JetStream, bucket string, info *jetstream.ObjectInfo) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(ctx)
	// A stream that lost its leader, or a server back without it, breaks
	// the consumer, and nats.go makes it again for ever unless bounded,
	// while Read waits in Next.
	c, err := js.OrderedConsumer(ctx, "OBJ_"+bucket, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"$O." + bucket + ".C." + info.NUID}, MaxResetAttempts: natsutil.ReadResets})
	if err != nil {
		cancel()
		return nil, err
	}
	it, err := c.Messages(jetstream.PullMaxBytes(readAhead), jetstream.PullExpiry(readExpiry))
	if err != nil {
		cancel()
		return nil, err
	}
	return &objectReader{ctx: ctx, what: fmt.Sprintf("object %s of bucket %s", info.Name, bucket),
		it: it, left: info.Size, cancel: cancel}, nil
}

func (o *objectReader) Read(p []byte) (int, error) {
	for len(o.buf) == 0 {
		if o.left == 0 {
			return 0, io.EOF
		}
		// The caller's context (TransferTimeout, a ^C) ends a read, not
		// only the opening; chunkStall ends one that stalled.
		ctx, cancel := context.WithTimeout(o.ctx, chunkStall)
		m, err := o.it.Next(jetstream.NextContext(ctx))
		cancel()
		if err != nil && o.ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			return 0, fmt.Errorf("reading %s: no chunk for %s (%d bytes left)", o.what, chunkStall, o.left)
		}
		if err != nil {
			return 0, fmt.Errorf("reading %s: %w", o.what, err)
		}
		o.buf = m.Data()
		if uint64(len(o.buf)) > o.left {
			return 0, fmt.Errorf("object has more data than its size says")
		}
		o.left -= uint64(len(o.buf))
	}
	n := copy(p, o.buf)
	o.buf = o.buf[n:]
	return n, nil
}

func (o *objectReader) Close() error {
	o.it.Stop()
	o.cancel()
	return nil
}

// putObject stores r as object name in bucket through js, replacing an
// existing object of that name only once the new one is complete. On any
// error (r's included: a bundle entry whose hash does not check) the
// chunks written so far are purged and the old object stays.
func putObject(ctx context.Context, js jetstream.JetStream, bucket, name string, r io.Reader) (*jetstream.ObjectInfo, error) {
	obs, err := js.ObjectStore(ctx, bucket)
	if err != nil {
		return nil, err
	}
	old, err := obs.GetInfo(ctx, name)
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, err
	}
	stream, err := js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		return nil, err
	}
	id := rand.Text() // the chunks' subject token, unique like nats.go's nuid
	chunkSubj := "$O." + bucket + ".C." + id
	fail := func(err error) (*jetstream.ObjectInfo, error) {
		stream.Purge(context.WithoutCancel(ctx), jetstream.WithPurgeSubject(chunkSubj))
		return nil, err
	}
	h := sha256.New()
	var size uint64
	var chunks uint32
	var window []jetstream.PubAckFuture
	wait := func(keep int) error {
		for len(window) > keep {
			select {
			case <-window[0].Ok():
			case err := <-window[0].Err():
				return fmt.Errorf("storing a chunk: %w", err)
			case <-ctx.Done():
				return ctx.Err()
			}
			window = window[1:]
		}
		return nil
	}
	for {
		buf := make([]byte, chunkSize) // kept by the publisher until acked
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			m := nats.NewMsg(chunkSubj)
			m.Data = buf[:n]
			h.Write(m.Data)
			ack, err := js.PublishMsgAsync(m)
			if err != nil {
				return fail(err)
			}
			window = append(window, ack)
			size += uint64(n)
			chunks++
			if err := wait(putWindow); err != nil {
				return fail(err)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fail(rerr)
		}
	}
	if err := wait(0); err != nil {
		return fail(err)
	}
	info := &jetstream.ObjectInfo{
		ObjectMeta: jetstream.ObjectMeta{Name: name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: chunkSize}},
		Bucket:     bucket, NUID: id, Size: size, Chunks: chunks,
		Digest: "SHA-256=" + base64.URLEncoding.EncodeToString(h.Sum(nil)),
	}
	meta := nats.NewMsg("$O." + bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name)))
	meta.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	meta.Data, _ = json.Marshal(info)
	if _, err := js.PublishMsg(ctx, meta); err != nil {
		return fail(err)
	}
	if old != nil && !old.Deleted {
		stream.Purge(ctx, jetstream.WithPurgeSubject("$O."+bucket+".C."+old.NUID))
	}
	return info, nil
}
