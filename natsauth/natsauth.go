// Package natsauth turns voik's NATS credential and TLS settings into
// nats.go connection options, for the service and its command-line client
// alike, so that neither depends on the other for how to log in.
package natsauth

import (
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/voik/voik/config"
)

// Options are the NATS options for the configured credentials (a
// credentials file, an NKey seed file, a token, or a user and password)
// and TLS (a CA, a client certificate). config.Load has checked that the
// files exist and that the settings go together; an NKey seed that does
// not parse is an error naming VOIK_NATS_NKEY.
func Options(cfg *config.Config) ([]nats.Option, error) {
	var opts []nats.Option
	if cfg.NatsCreds != "" {
		opts = append(opts, nats.UserCredentials(cfg.NatsCreds))
	}
	if cfg.NatsNKey != "" {
		opt, err := nats.NkeyOptionFromSeed(cfg.NatsNKey)
		if err != nil {
			return nil, fmt.Errorf("VOIK_NATS_NKEY: %v", err)
		}
		opts = append(opts, opt)
	}
	if cfg.NatsToken != "" {
		opts = append(opts, nats.Token(cfg.NatsToken))
	}
	if cfg.NatsUser != "" {
		opts = append(opts, nats.UserInfo(cfg.NatsUser, cfg.NatsPassword))
	}
	if cfg.NatsTLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.NatsTLSCA))
	}
	if cfg.NatsTLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.NatsTLSCert, cfg.NatsTLSKey))
	}
	return opts, nil
}
