package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/streams"
)

func init() {
	blueprintCommands["sign"] = runBlueprintSign
}

// runBlueprintSign signs a blueprint file for one node's key and prints the
// envelope, or puts it on the hub with --put.
func runBlueprintSign(ctx context.Context, args []string) error {
	fs := newFlags("blueprint sign")
	keyFile := fs.String("key", "", "publisher seed file (OPERATOR-DIR/keys/TENANT-publisher.nk; required)")
	forKey := fs.String("for", "", "node key SITE.NODE the blueprint is for (required)")
	seq := fs.Uint64("seq", 0, "sequence number, must grow per key (default: now in nanoseconds)")
	put := fs.Bool("put", false, "put the signed blueprint on the hub's blueprints bucket")
	hubURL := fs.String("hub", "tls://127.0.0.1:4222", "hub client URL (with --put)")
	creds := fs.String("creds", "", "tenant admin credentials (with --put)")
	ca := fs.String("tls-ca", "", "CA of the hub's certificate (with --put and a tls:// URL)")
	file, err := parseOne(fs, args, "FILE")
	if err != nil || *keyFile == "" || *forKey == "" {
		return errors.New("usage: alpha blueprint sign --key SEED --for SITE.NODE [--put --hub URL --creds FILE --tls-ca CA] FILE")
	}
	site, node, ok := strings.Cut(*forKey, ".")
	if !ok {
		return fmt.Errorf("--for %q: want SITE.NODE", *forKey)
	}
	if err := streams.ValidID("site", site); err != nil {
		return fmt.Errorf("--for: %w", err)
	}
	if err := streams.ValidID("node", node); err != nil {
		return fmt.Errorf("--for: %w", err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	// Refuse to sign what agents would refuse to apply.
	if _, err := blueprint.Parse(data); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	seed, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("--key: %w", err)
	}
	env, err := sign.Sign(seed, *forKey, *seq, data)
	if err != nil {
		return err
	}
	if !*put {
		fmt.Println(string(env))
		return nil
	}
	nc, js, err := dialHub("alpha-publish", *hubURL, *creds, *ca)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, streams.BlueprintsBucket)
	if err != nil {
		return err
	}
	rev, err := kv.Put(ctx, *forKey, env)
	if err != nil {
		return err
	}
	fmt.Printf("%s: signed and put as revision %d\n", *forKey, rev)
	return nil
}
