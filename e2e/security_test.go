// Package e2e is the home of voik's system tests: voik (in-process or as a
// child process) against real NATS servers, through the wire contract of
// docs/protocol.md, as a user would meet it. Its subpackages crash and
// soak hold the long runs behind make crash and make soak.
//
// The tests in this file run voik against NATS servers that require
// authentication, TLS and subject permissions: the security a shared NATS
// needs. Each starts an embedded nats-server configured for one method,
// runs voik in-process connecting with the matching VOIK_NATS_* settings,
// and proves that it captures and serves.
package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/voik/voik/client"
	"github.com/voik/voik/config"
	"github.com/voik/voik/harness"
	"github.com/voik/voik/messages"
	"github.com/voik/voik/natsauth"
	"github.com/voik/voik/sidecar"
)

// runVoik runs voik with cfg until the test ends, logging at debug level
// into the returned buffer, and returns once its API answers.
func runVoik(t *testing.T, cfg *config.Config) *harness.LogBuffer {
	t.Helper()
	logs := &harness.LogBuffer{}
	harness.StartVoik(t, cfg, harness.WithoutClient(),
		harness.WithLogger(slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	return logs
}

// clientFor connects a client the way voik's command-line client does:
// with the NATS settings of cfg.
func clientFor(t *testing.T, cfg *config.Config) (*nats.Conn, *client.Client) {
	t.Helper()
	opts, err := natsauth.Options(cfg)
	if err != nil {
		t.Fatal(err)
	}
	nc := harness.Connect(t, cfg.NatsURL, opts...)
	return nc, client.New(nc, cfg.APIPrefix)
}

// publishAndFetch publishes n messages on subject and checks that voik
// stored them, in order.
func publishAndFetch(t *testing.T, nc *nats.Conn, api *client.Client, subject string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := nc.Publish(subject, []byte{byte('a' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	harness.Eventually(t, 10*time.Second, "capture of "+subject, func() bool {
		info, err := api.Info(ctx, subject)
		return err == nil && info.EndOffset >= uint64(n)
	})
	reply, err := api.Fetch(ctx, subject, messages.FetchRequest{}) // n is well under a page
	if err != nil {
		t.Fatalf("fetch %s: %v", subject, err)
	}
	records := reply.Records
	if len(records) != n {
		t.Fatalf("fetch %s: %d records, want %d", subject, len(records), n)
	}
	for i, r := range records {
		if r.Offset != uint64(i) || !bytes.Equal(r.Data, []byte{byte('a' + i)}) {
			t.Fatalf("record %d: offset %d data %q", i, r.Offset, r.Data)
		}
	}
}

func writeFile(t *testing.T, dir, name string, content []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ---- certificates, generated per test ----

type testPKI struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
}

func newPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTemplate := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "voik test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (certFile, keyFile string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		template := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
			DNSNames:     []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, template, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certFile = writeFile(t, dir, name+".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		keyFile = writeFile(t, dir, name+"-key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
		return certFile, keyFile
	}
	p := testPKI{caFile: writeFile(t, dir, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))}
	p.serverCert, p.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

// withTLS makes the server require TLS, and with verify a client certificate.
func withTLS(t *testing.T, p testPKI, verify bool) harness.NATSOption {
	return harness.WithOptions(func(o *server.Options) {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.serverCert, KeyFile: p.serverKey, CaFile: p.caFile, Verify: verify})
		if err != nil {
			t.Fatal(err)
		}
		o.TLSConfig = tc
		o.TLSVerify = verify
		o.TLSTimeout = 5
	})
}

// ---- one test per way of authenticating ----

func TestConnectsWithEachAuthMethod(t *testing.T) {
	const secret = "s3cr3t-never-logged"
	cases := []struct {
		name  string
		setup func(t *testing.T, cfg *config.Config) harness.NATSOption
	}{
		{"user and password", func(t *testing.T, cfg *config.Config) harness.NATSOption {
			cfg.NatsUser, cfg.NatsPassword = "voik", secret
			return harness.WithOptions(func(o *server.Options) { o.Username, o.Password = "voik", secret })
		}},
		{"token", func(t *testing.T, cfg *config.Config) harness.NATSOption {
			cfg.NatsToken = secret
			return harness.WithOptions(func(o *server.Options) { o.Authorization = secret })
		}},
		{"nkey seed file", func(t *testing.T, cfg *config.Config) harness.NATSOption {
			user, err := nkeys.CreateUser()
			if err != nil {
				t.Fatal(err)
			}
			seed, _ := user.Seed()
			public, _ := user.PublicKey()
			cfg.NatsNKey = writeFile(t, t.TempDir(), "voik.nk", seed)
			return harness.WithOptions(func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: public}} })
		}},
		{"credentials file", func(t *testing.T, cfg *config.Config) harness.NATSOption {
			operatorClaims, resolver, creds := operatorMode(t)
			cfg.NatsCreds = writeFile(t, t.TempDir(), "voik.creds", creds)
			return harness.WithOptions(func(o *server.Options) {
				o.TrustedOperators = []*jwt.OperatorClaims{operatorClaims}
				o.AccountResolver = resolver
				o.NoSystemAccount = true
			})
		}},
		{"TLS with a custom CA", func(t *testing.T, cfg *config.Config) harness.NATSOption {
			p := newPKI(t)
			cfg.NatsTLSCA = p.caFile
			return withTLS(t, p, false)
		}},
		{"mutual TLS", func(t *testing.T, cfg *config.Config) harness.NATSOption {
			p := newPKI(t)
			cfg.NatsTLSCA, cfg.NatsTLSCert, cfg.NatsTLSKey = p.caFile, p.clientCert, p.clientKey
			return withTLS(t, p, true)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := harness.TestConfig(t, "")
			cfg.HTTPAddr = ""
			cfg.Subjects = "secure.>"
			ns := harness.StartNATS(t, c.setup(t, cfg))
			cfg.NatsURL = ns.ClientURL()

			// Without the settings the server turns a client away: the
			// test proves voik used them.
			if nc, err := nats.Connect(cfg.NatsURL, nats.MaxReconnects(0), nats.Timeout(2*time.Second)); err == nil {
				nc.Close()
				t.Fatalf("the server accepts a client without credentials")
			}
			logs := runVoik(t, cfg)
			nc, api := clientFor(t, cfg)
			publishAndFetch(t, nc, api, "secure.orders", 3)
			if strings.Contains(logs.String(), secret) {
				t.Fatalf("a secret appears in voik's logs:\n%s", logs)
			}
		})
	}
}

// operatorMode makes an operator, an account and a user (decentralized
// JWT auth) and returns what the server trusts and the user's creds file.
func operatorMode(t *testing.T) (*jwt.OperatorClaims, server.AccountResolver, []byte) {
	t.Helper()
	operator, _ := nkeys.CreateOperator()
	operatorPub, _ := operator.PublicKey()
	operatorClaims := jwt.NewOperatorClaims(operatorPub)
	operatorJWT, err := operatorClaims.Encode(operator)
	if err != nil {
		t.Fatal(err)
	}
	if operatorClaims, err = jwt.DecodeOperatorClaims(operatorJWT); err != nil {
		t.Fatal(err)
	}
	account, _ := nkeys.CreateAccount()
	accountPub, _ := account.PublicKey()
	accountJWT, err := jwt.NewAccountClaims(accountPub).Encode(operator)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	if err := resolver.Store(accountPub, accountJWT); err != nil {
		t.Fatal(err)
	}
	user, _ := nkeys.CreateUser()
	userPub, _ := user.PublicKey()
	userJWT, err := jwt.NewUserClaims(userPub).Encode(account)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		t.Fatal(err)
	}
	return operatorClaims, resolver, creds
}

// TestWrongCredentialsAreRetriedNotFatal: voik may start before its NATS
// user exists (Kubernetes applies things in any order): it keeps retrying,
// logs why, and never logs the password.
func TestWrongCredentialsAreRetriedNotFatal(t *testing.T) {
	const secret = "wrong-password-never-logged"
	ns := harness.StartNATS(t, harness.WithOptions(func(o *server.Options) { o.Username, o.Password = "voik", "right" }))
	cfg := harness.TestConfig(t, ns.ClientURL())
	cfg.HTTPAddr = ""
	cfg.NatsUser, cfg.NatsPassword = "voik", secret
	logs := &harness.LogBuffer{}
	s, err := sidecar.New(cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	harness.Eventually(t, 10*time.Second, "a log line about the refused connection", func() bool {
		return strings.Contains(strings.ToLower(logs.String()), "authorization")
	})
	select {
	case err := <-done:
		t.Fatalf("voik gave up on NATS: %v", err)
	case <-s.Started():
		t.Fatal("voik says it started with credentials the server refuses")
	default:
	}
	cancel()
	<-done
	if strings.Contains(logs.String(), secret) {
		t.Fatalf("the password appears in voik's logs:\n%s", logs)
	}
}

// TestPermissionsRestrictWhoFetchesWhat is the README's worked example:
// the stored subject is part of the API subject, so plain NATS subject
// permissions decide who may read which history. A user allowed
// VOIK.API.FETCH.orders.> reads orders and is refused payments.
func TestPermissionsRestrictWhoFetchesWhat(t *testing.T) {
	allowAll := &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{">"}},
		Subscribe: &server.SubjectPermission{Allow: []string{">"}},
	}
	ns := harness.StartNATS(t, harness.WithOptions(func(o *server.Options) {
		o.Users = []*server.User{
			{Username: "voik", Password: "voik-pw", Permissions: allowAll},
			{Username: "publisher", Password: "publisher-pw", Permissions: allowAll},
			{Username: "orders-reader", Password: "reader-pw", Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{"VOIK.API.FETCH.orders.>", "VOIK.API.INFO.orders.>"}},
				Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}},
			}},
		}
	}))
	cfg := harness.TestConfig(t, ns.ClientURL())
	cfg.HTTPAddr = ""
	cfg.NatsUser, cfg.NatsPassword = "voik", "voik-pw"
	runVoik(t, cfg)

	publisher := harness.Connect(t, cfg.NatsURL, nats.UserInfo("publisher", "publisher-pw"))
	for _, subject := range []string{"orders.eu", "payments.eu"} {
		if _, err := client.New(publisher, cfg.APIPrefix).Append(context.Background(), subject, nil, []byte(subject)); err != nil {
			t.Fatalf("acked append to %s: %v", subject, err)
		}
	}

	violations := make(chan error, 10)
	reader := harness.Connect(t, cfg.NatsURL, nats.UserInfo("orders-reader", "reader-pw"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { violations <- err }))
	api := client.New(reader, cfg.APIPrefix)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, err := api.Fetch(ctx, "orders.eu", messages.FetchRequest{})
	if err != nil || len(reply.Records) != 1 || string(reply.Records[0].Data) != "orders.eu" {
		t.Fatalf("orders-reader fetching orders.eu: %+v, %v", reply, err)
	}

	short, cancelShort := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancelShort()
	if reply, err := api.Fetch(short, "payments.eu", messages.FetchRequest{}); err == nil {
		t.Fatalf("orders-reader fetched payments.eu: %+v", reply)
	}
	select {
	case err := <-violations:
		if !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Fatalf("the refusal is not a permissions violation: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not report a permissions violation for VOIK.API.FETCH.payments.eu")
	}
}

// TestDataDirIsPrivate: the data dir and everything in it are readable
// by voik's user only (directories 0700, files 0600).
func TestDataDirIsPrivate(t *testing.T) {
	ns := harness.StartNATS(t)
	cfg := harness.TestConfig(t, ns.ClientURL())
	cfg.HTTPAddr = ""
	runVoik(t, cfg)
	nc, api := clientFor(t, cfg)
	publishAndFetch(t, nc, api, "private.orders", 2)
	publishAndFetch(t, nc, api, "a/b.%.ü", 1)
	seen := 0
	err := filepath.WalkDir(cfg.DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if got := info.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
		seen++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen < 8 {
		t.Fatalf("only %d entries in the data dir", seen)
	}
}
