package blueprint

import (
	"errors"
	"strings"
	"testing"
)

const osBase = "apiVersion: alpha/v1\nkind: Blueprint\nmetadata: {name: os}\nspec:\n"

func TestOSSectionErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		want       []string
	}{
		{"malformed sysctl key", "  sysctl: {\"net..ipv4\": \"1\"}\n", []string{`spec.sysctl.net..ipv4: "net..ipv4" is not a sysctl key`}},
		{"multi-line sysctl value", "  sysctl: {net.ipv4.ip_forward: \"1\\nkernel.x = 1\"}\n", []string{"spec.sysctl.net.ipv4.ip_forward:", "on one line"}},
		{"malformed CIDR in firewall", "  firewall:\n    rules: [{action: accept, source: 10.1.2.0/33}]\n", []string{`spec.firewall.rules[0].source: "10.1.2.0/33" is not an address or CIDR`}},
		{"malformed CIDR address", "  network:\n    interfaces: [{name: eth0, addresses: [10.0.0.1]}]\n", []string{`spec.network.interfaces[0].addresses[0]: "10.0.0.1" is not a CIDR address`}},
		{"malformed route", "  network:\n    routes: [{destination: 10.0.0.0/40, gateway: 10.0.0.1}]\n", []string{`spec.network.routes[0].destination: "10.0.0.0/40" is not a CIDR`}},
		{"route without way", "  network:\n    routes: [{destination: 10.0.0.0/8}]\n", []string{"spec.network.routes[0]: a route needs a gateway or an interface"}},
		{"port out of range", "  firewall:\n    rules: [{action: accept, protocol: udp, port: 65536}]\n", []string{"spec.firewall.rules[0].port: 65536 is out of range 1-65535"}},
		{"negative port", "  firewall:\n    rules: [{action: accept, protocol: tcp, port: -1}]\n", []string{"spec.firewall.rules[0].port: -1 is out of range"}},
		{"port range reversed", "  firewall:\n    rules: [{action: accept, protocol: tcp, ports: 9000-8000}]\n", []string{`spec.firewall.rules[0].ports: "9000-8000" is not a port range`}},
		{"port without protocol", "  firewall:\n    rules: [{action: drop, port: 22}]\n", []string{"spec.firewall.rules[0].protocol: a port needs protocol tcp or udp"}},
		{"interface name too long", "  firewall:\n    rules: [{action: accept, interface: an-interface-name-far-too-long}]\n", []string{`spec.firewall.rules[0].interface: "an-interface-name-far-too-long" is not an interface name`}},
		{"bad policy", "  firewall:\n    policy: {input: reject}\n", []string{`spec.firewall.policy.input: "reject" is not one of accept, drop`}},
		{"window without days", "  maintenance:\n    windows: [{days: [], start: \"02:00\", end: \"04:00\"}]\n", []string{"spec.maintenance.windows[0].days: is empty: the window would never open"}},
		{"window of zero length", "  maintenance:\n    windows: [{days: [sat], start: \"02:00\", end: \"02:00\"}]\n", []string{`spec.maintenance.windows[0].end: "02:00" equals start: the window would never open`}},
		{"window on no real day", "  maintenance:\n    windows: [{days: [someday], start: \"02:00\", end: \"04:00\"}]\n", []string{`spec.maintenance.windows[0].days[0]: "someday" is not one of`, "spec.maintenance.windows: no window names a valid day"}},
		{"window bad clock", "  maintenance:\n    windows: [{days: [sat], start: \"25:00\", end: \"04:00\"}]\n", []string{`spec.maintenance.windows[0].start: "25:00" is not a time`}},
		{"unknown zone", "  maintenance:\n    timeZone: Mars/Olympus\n", []string{`spec.maintenance.timeZone: "Mars/Olympus" is not a known time zone`}},
		{"module options injection", "  kernelModules: [{name: wireguard, options: \"a=1\\ninstall x /bin/sh\"}]\n", []string{"spec.kernelModules[0].options:", "one line"}},
		{"module name", "  kernelModules: [{name: \"../x\"}]\n", []string{`spec.kernelModules[0].name: "../x" is not a module name`}},
		{"module name is a flag", "  kernelModules: [{name: \"--config\"}]\n", []string{`spec.kernelModules[0].name: "--config" is not a module name`}},
		{"module short flag", "  kernelModules: [{name: \"-C\"}]\n", []string{`spec.kernelModules[0].name: "-C" is not a module name`}},
		{"module options are flags", "  kernelModules: [{name: wireguard, options: \"-C /tmp/evil.conf\"}]\n", []string{`spec.kernelModules[0].options: "-C /tmp/evil.conf" is not module options: "-C" is not a key=value parameter`}},
		{"module option flag after a good one", "  kernelModules: [{name: wireguard, options: \"debug=1 --dry-run\"}]\n", []string{`spec.kernelModules[0].options: "debug=1 --dry-run" is not module options: "--dry-run"`}},
		{"module option without value", "  kernelModules: [{name: wireguard, options: \"debug\"}]\n", []string{`spec.kernelModules[0].options: "debug" is not module options`}},
		{"module option quote", "  kernelModules: [{name: wireguard, options: \"a='x\"}]\n", []string{`spec.kernelModules[0].options: "a='x" is not module options`}},
		{"another program's table", "  firewall:\n    table: firewalld\n", []string{`spec.firewall.table: "firewalld" must start with "alpha"`}},
		{"table after alpha", "  firewall:\n    table: \"alpha x\"\n", []string{`spec.firewall.table: "alpha x" is not a table name`}},
		{"policy needs mounts", "  compliance:\n    policies: [{name: luks, type: diskEncryption}]\n", []string{"spec.compliance.policies[0].mounts: is required for diskEncryption"}},
		{"duplicate policy", "  compliance:\n    policies: [{name: a, type: secureBoot}, {name: a, type: secureBoot}]\n", []string{`spec.compliance.policies[1].name: "a" is declared twice`}},
		{"selinux state", "  compliance:\n    policies: [{name: s, type: selinux, state: on}]\n", []string{`spec.compliance.policies[0].state: "on" is not one of enforcing, permissive`}},
		{"fileContent comment", "  compliance:\n    policies: [{name: f, type: fileContent, path: /etc/ssh/sshd_config, line: \"# PermitRootLogin no\"}]\n", []string{"spec.compliance.policies[0].line:", "not a comment"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(osBase + tc.spec))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("want ErrInvalid, got %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestOSSectionValid(t *testing.T) {
	doc := osBase + `  sysctl: {net.ipv4.ip_forward: "1", net.ipv4.ip_local_port_range: "20000 30000"}
  kernelModules: [{name: br_netfilter}, {name: wireguard, options: "debug=1"}, {name: usb-storage, state: blacklisted}, {name: nvme_core, options: "default_ps_max_latency_us=0 io_timeout=4294967295 x=a,b:c/d"}]
  firewall:
    table: alpha_edge
    policy: {input: drop}
    rules:
      - {name: ssh, action: accept, protocol: tcp, port: 22, source: 10.0.0.0/8}
      - {action: accept, protocol: udp, ports: 8000-8100, interface: eth0}
      - {action: accept, protocol: icmp, source: "fd00::/8"}
  network:
    interfaces: [{name: eth0, up: true, mtu: 1400, addresses: [10.9.0.2/24]}]
    routes: [{destination: default, gateway: 10.9.0.1}, {destination: 192.0.2.7/32, interface: eth0}]
  compliance:
    policies:
      - {name: root, type: fileContent, mode: enforce, path: /etc/ssh/sshd_config, line: PermitRootLogin no}
      - {name: luks, type: diskEncryption, mounts: [/, /data]}
  maintenance:
    timeZone: Europe/Berlin
    windows: [{days: [sat, sun], start: "23:00", end: "01:00"}]
`
	if _, err := Parse([]byte(doc)); err != nil {
		t.Fatal(err)
	}
}
