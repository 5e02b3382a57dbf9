package leaf

import "testing"

// Only a JetStream reply of the hub's domain that names a stream and a
// consumer counts as an awaited reset; anything else is left alone.
func TestAwaitedReset(t *testing.T) {
	for reply, want := range map[string]string{
		"$JSC.R.hub.szMpdrwD.KV_blueprints.mirror-a-blueprints.8ftPEtro": "KV_blueprints.mirror-a-blueprints",
		"$JSC.R.hub.x.OBJ_artifacts.mirror-a-artifacts.y":                "OBJ_artifacts.mirror-a-artifacts",
		"$JSC.R.a.szMpdrwD.KV_status.uplink-KV_status.8ftPEtro":          "", // the site's own domain
		"$JSC.R.hub.>": "",
		"$JSC.R.hub.x.KV_blueprints.mirror-a-blueprints": "", // no token
		"$JSC.R.8ftPEtro": "", // the v1 reply format names nothing
		"_INBOX.abc.def":  "",
		"$JSC.R.hub.x.KV_blueprints.mirror-a-blueprints.y.z": "",
	} {
		if got := awaitedReset(reply); got != want {
			t.Errorf("awaitedReset(%q) = %q, want %q", reply, got, want)
		}
	}
}
