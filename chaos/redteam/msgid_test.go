package redteam

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// A stolen box (s1's own leaf credentials, the attacker's own server)
// sends telemetry, events and log lines under s1's own subjects, as it may,
// but with the message ids that s2's genuine messages carry. The hub's
// streams deduplicate on Nats-Msg-Id across every site of the tenant, so
// with the ids stored as sent the hub silently dropped whichever of the
// two came second: s2's data when the attacker was first (a message s2
// held while its link was down, or one whose id the attacker guessed).
// Whichever comes first, the hub must hold all of s2's messages, each once
// and with s2's content, and all of s1's own too (two honest sites whose
// ids collide lose nothing either).
func TestSiteCannotDropAnotherSitesMessagesByID(t *testing.T) {
	ctx := context.Background()
	a := udStolenS1(t)
	hjs, victim, box := a.hjs, a.victim, a.box

	const n = 5
	for _, order := range []string{"attacker-first", "victim-first"} {
		for _, stream := range []string{streams.TelemetryStream, streams.EventsStream, streams.LogsStream} {
			t.Run(order+"/"+stream, func(t *testing.T) {
				// The ids look like an agent's (node, boot id, sequence):
				// nothing in them is secret.
				ids := make([]string, n)
				var want, forged []string
				for i := range ids {
					ids[i] = fmt.Sprintf("n1:boot-%s:%d", order, i)
					want = append(want, fmt.Sprintf(`{"site":"s2","n":%d,"case":%q}`, i, order))
					forged = append(forged, fmt.Sprintf(`{"site":"s1","n":%d,"case":%q}`, i, order))
				}
				victimSubj := midSubject(stream, "s2", order)
				attackerSubj := midSubject(stream, "s1", order)
				attack := func() {
					t.Helper()
					var recs []streams.Record
					for i, id := range ids {
						recs = append(recs, streams.Record{Seq: uint64(i + 1), Subject: attackerSubj, ID: id, Data: []byte(forged[i])})
					}
					check.For(t, 10*time.Second, 100*time.Millisecond, func() error {
						r, err := srcIngest(box, "s1", stream, recs...)
						if err != nil {
							return err
						}
						if r.Stored != n || r.Error != "" {
							return fmt.Errorf("ingest answered %+v to the attacker's %d records", r, n)
						}
						return nil
					})
				}
				genuine := func() {
					t.Helper()
					for i, id := range ids {
						m := nats.NewMsg(victimSubj)
						m.Header.Set(jetstream.MsgIDHeader, id)
						m.Data = []byte(want[i])
						_, err := victim.PublishMsg(ctx, m)
						check.NoError(t, err)
					}
				}
				if order == "attacker-first" {
					attack()
					genuine()
				} else {
					genuine()
					midHubHolds(t, hjs, stream, victimSubj, want)
					attack()
				}
				midHubHolds(t, hjs, stream, victimSubj, want)
				midHubHolds(t, hjs, stream, attackerSubj, forged)
			})
		}
	}
}

// midSubject is a subject of site's own in a site stream.
func midSubject(stream, site, order string) string {
	return strings.TrimSuffix(streams.UplinkSubjects(stream, site), ">") + "n1.mid." + order
}

// midHubHolds waits until the hub stream holds on subj exactly the
// payloads want (each once, any order), and fails naming what it holds.
func midHubHolds(t *testing.T, js jetstream.JetStream, stream, subj string, want []string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	check.For(t, 20*time.Second, 200*time.Millisecond, func() error {
		got, err := midHubData(js, stream, subj)
		if err != nil {
			return err
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("hub %s holds on %s %d messages %q, want %d: %q", stream, subj, len(got), got, len(want), want)
		}
		return nil
	})
}

// midHubData reads the payloads of every message on subj in a hub stream.
func midHubData(js jetstream.JetStream, stream, subj string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return nil, err
	}
	total := int(info.State.Subjects[subj])
	if total == 0 {
		return nil, nil
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}})
	if err != nil {
		return nil, err
	}
	var out []string
	for len(out) < total {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			return out, fmt.Errorf("%s %s: read %d of %d: %w", stream, subj, len(out), total, err)
		}
		out = append(out, string(m.Data()))
	}
	return out, nil
}
