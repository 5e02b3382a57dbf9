package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/alpha-edge/alpha/hub/ui"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
)

func init() {
	register("ui", "fleet dashboard: 'ui login' prints a one-time sign-in URL for a tenant admin", runUI)
}

func runUI(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "login" {
		return errors.New("usage: alpha ui login --url https://HUB:PORT --creds TENANT-admin.creds [--tls-ca ca.pem]")
	}
	fs := newFlags("ui login")
	url := fs.String("url", "", "the dashboard's URL, as the hub's --ui-listen serves it (required)")
	creds := fs.String("creds", "", "the tenant administrator's credentials file (required)")
	ca := fs.String("tls-ca", "", "CA (PEM) of the hub's certificate; empty: the system's")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *url == "" || *creds == "" {
		return errors.New("--url and --creds are required")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if *ca != "" {
		tc, err := tlsfiles.Files{CA: *ca}.Client()
		if err != nil {
			return err
		}
		tr.TLSClientConfig = tc
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	link, err := ui.Login(ctx, &http.Client{Transport: tr}, *url, *creds)
	if err != nil {
		return err
	}
	fmt.Println(link)
	return nil
}
