package main

import (
	"flag"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
)

// clusterFlags make `alpha hub` one member of a NATS cluster: routes between
// the members, JetStream replicated across them (R3 buckets and streams), so
// sites that list every member's leafnode URL move to a survivor.
type clusterFlags struct {
	cluster, routes, name *string
	replicas              *int
	rebalance             *bool
	rebalanceEvery        *time.Duration
}

func addClusterFlags(fs *flag.FlagSet) clusterFlags {
	return clusterFlags{
		cluster:        fs.String("cluster", "", "cluster (route) listener HOST:PORT; set to run as a cluster member (operator mode: mutual TLS with --tls-ca, route password from creds/cluster.secret)"),
		routes:         fs.String("routes", "", "routes to the other members, comma-separated: nats-route://HOST:6222"),
		name:           fs.String("name", "hub", "this member's server name, unique in the cluster"),
		replicas:       fs.Int("replicas", 0, "replicas of buckets and streams (default 3 in a cluster, 1 alone)"),
		rebalance:      fs.Bool("rebalance", true, "in a cluster, a member holding clearly more than its share of site links drops a few at a time so they reconnect to the others (a member that rejoins gets sites back)"),
		rebalanceEvery: fs.Duration("rebalance-every", hub.DefaultRebalanceEvery, "how often a member compares its site links with its peers' (jittered ±20%)"),
	}
}

// apply adds the cluster options to the hub's config through its Options
// hook; without --cluster it only names the server.
func (f clusterFlags) apply(cfg *hub.Config) error {
	name := strings.TrimSpace(*f.name)
	if name == "" {
		return fmt.Errorf("--name %q must not be empty", *f.name)
	}
	cfg.Replicas = *f.replicas
	cfg.NoRebalance = !*f.rebalance
	cfg.RebalanceEvery = *f.rebalanceEvery
	if cfg.RebalanceEvery <= 0 {
		return fmt.Errorf("--rebalance-every %v: want a positive interval", cfg.RebalanceEvery)
	}
	if *f.cluster == "" {
		if *f.routes != "" {
			return fmt.Errorf("--routes %q needs --cluster", *f.routes)
		}
		if cfg.Replicas > 1 {
			return fmt.Errorf("--replicas %d needs --cluster", cfg.Replicas)
		}
		cfg.Options = chain(cfg.Options, func(o *server.Options) error { o.ServerName = name; return nil })
		return nil
	}
	host, port, err := natsutil.SplitAddr("--cluster", *f.cluster)
	if err != nil {
		return err
	}
	var routes []*url.URL
	for _, r := range strings.Split(*f.routes, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		u, err := url.Parse(r)
		if err != nil || u.Host == "" || u.Scheme != "nats-route" {
			return fmt.Errorf("--routes: %q is not a URL like nats-route://HOST:6222", r)
		}
		routes = append(routes, u)
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = min(3, len(routes)+1)
	}
	cfg.Options = chain(cfg.Options, func(o *server.Options) error {
		o.ServerName = name
		o.Cluster = server.ClusterOpts{
			Name: "alpha-hub",
			Host: host,
			Port: port,
			// Members know each other from --routes; gossiping addresses
			// would hand out listeners that may sit behind NAT or proxies.
			NoAdvertise: true,
		}
		o.Routes = routes
		return nil
	})
	return nil
}

// secure closes the routes to everyone but members in operator mode: mutual
// TLS verified against --tls-ca, and the operator directory's cluster
// secret as the route password. A server that reaches a route port without
// both is refused before it learns any subject or message; without this,
// any process that reaches the port joins the cluster and receives every
// tenant's messages (chaos/redteam TestRogueRouteLearnsNothing). op is nil
// with --insecure: routes stay plain there.
func (f clusterFlags) secure(cfg *hub.Config, files tlsfiles.Files, op *accounts.Operator) error {
	if *f.cluster == "" || op == nil {
		return nil
	}
	tc, err := files.Route()
	if err != nil {
		return err
	}
	secret, err := op.ReadClusterSecret()
	if err != nil {
		return err
	}
	cfg.Options = chain(cfg.Options, func(o *server.Options) error {
		o.Cluster.TLSConfig = tc
		o.Cluster.TLSTimeout = 5
		o.Cluster.Username = accounts.RouteUser
		o.Cluster.Password = secret
		// A dialled route presents what its URL carries.
		for _, u := range o.Routes {
			u.User = url.UserPassword(accounts.RouteUser, secret)
		}
		return nil
	})
	return nil
}
