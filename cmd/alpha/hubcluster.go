package main

import (
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
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
		if isSelf(u, host, port, localAddrs()) {
			// The usual NATS practice lists every member, this one too.
			// Counted as a peer it made a 2-member cluster ask for R3 and
			// kept the rebalancer waiting for an answer that never came.
			continue
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

// isSelf says a route URL names this member's own cluster listener
// (host:port of --cluster): the same port, and the same host, or a host of
// this machine when the listener is on every address. A DNS name other
// than localhost and this machine's hostname is not resolved: such a route
// counts as a peer, and nats-server then ignores the route to itself.
func isSelf(u *url.URL, host string, port int, local map[string]bool) bool {
	h, p, err := net.SplitHostPort(u.Host)
	if err != nil || p != strconv.Itoa(port) {
		return false
	}
	if h == host {
		return true
	}
	if hn, err := os.Hostname(); err == nil && strings.EqualFold(h, hn) {
		h = "localhost"
	}
	if strings.EqualFold(h, "localhost") {
		h = "127.0.0.1"
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	allAddrs := host == "" || host == "0.0.0.0" || host == "::"
	ip := net.ParseIP(h)
	if ip == nil {
		return false
	}
	if hip := net.ParseIP(host); hip != nil && hip.Equal(ip) {
		return true
	}
	return allAddrs && (ip.IsLoopback() || local[ip.String()])
}

// localAddrs are this machine's interface addresses.
func localAddrs() map[string]bool {
	out := map[string]bool{}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			out[n.IP.String()] = true
		}
	}
	return out
}
