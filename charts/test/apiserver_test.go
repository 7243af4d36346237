package charttest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// The chart's objects are created through a real kube-apiserver (on etcd),
// both built by `make tools` into .bin/ and named by version: it validates
// what no strict decoding can (selectors against template labels, label
// and name syntax, immutable and cross-field rules, defaulting, admission,
// Pod Security), the way a cluster would at `helm install`. One server
// serves every test of the binary: started by the first test that needs it,
// stopped by TestMain.

var (
	apiOnce   sync.Once
	apiServer *kubeAPI
	apiErr    error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if apiServer != nil {
		apiServer.stop()
	}
	os.Exit(code)
}

// kube returns the test binary's API server, starting it on first use. A
// missing binary fails the test: the tests never skip.
func kube(t *testing.T) *kubeAPI {
	t.Helper()
	apiOnce.Do(func() { apiServer, apiErr = startKubeAPI() })
	if apiErr != nil {
		t.Fatal(apiErr)
	}
	return apiServer
}

// kubeBinary is $env, else the one .bin/<name>-v* of the repository.
func kubeBinary(env, name string) (string, error) {
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s=%s: %v; `make tools` builds it", env, p, err)
		}
		return p, nil
	}
	found, _ := filepath.Glob(filepath.Join(repoRoot, ".bin", name+"-v*"))
	if len(found) != 1 {
		return "", fmt.Errorf("no %s: run `make tools` (it builds .bin/%s-<version>), or set %s (found %v)", name, name, env, found)
	}
	return filepath.Abs(found[0])
}

// kubeAPI is a running etcd and kube-apiserver on 127.0.0.1, and a client
// for its REST API with a bearer token of system:masters.
type kubeAPI struct {
	base   string
	token  string
	client *http.Client
	dir    string
	procs  []*exec.Cmd // etcd first
	exited []chan error

	mu        sync.Mutex
	resources map[string]metav1.APIResource // apiVersion/Kind
}

func startKubeAPI() (*kubeAPI, error) {
	etcdBin, err := kubeBinary("ETCD", "etcd")
	if err != nil {
		return nil, err
	}
	apiBin, err := kubeBinary("KUBE_APISERVER", "kube-apiserver")
	if err != nil {
		return nil, err
	}
	var last error
	// A free port found by listening and closing may be taken by another
	// process before the server binds it: try again on new ports.
	for attempt := 0; attempt < 3; attempt++ {
		k, err := launchKubeAPI(etcdBin, apiBin)
		if err == nil {
			return k, nil
		}
		last = err
	}
	return nil, last
}

func launchKubeAPI(etcdBin, apiBin string) (_ *kubeAPI, err error) {
	dir, err := os.MkdirTemp("", "voik-chart-kube-")
	if err != nil {
		return nil, err
	}
	k := &kubeAPI{dir: dir, resources: map[string]metav1.APIResource{}}
	defer func() {
		if err != nil {
			k.stop()
		}
	}()
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdClient := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	etcdPeer := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	if err := k.run(etcdBin, "etcd.log",
		"--name=chart-test",
		"--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdClient, "--advertise-client-urls="+etcdClient,
		"--listen-peer-urls="+etcdPeer, "--initial-advertise-peer-urls="+etcdPeer,
		"--initial-cluster=chart-test="+etcdPeer,
		"--unsafe-no-fsync", "--log-level=warn",
	); err != nil {
		return nil, err
	}

	// A serving certificate for 127.0.0.1 that the client trusts, a
	// service-account key pair, and a token of system:masters.
	certPEM, err := writeKeys(dir)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	token := make([]byte, 16)
	rand.Read(token)
	k.token = hex.EncodeToString(token)
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(k.token+`,chart-test,chart-test,"system:masters"`+"\n"), 0o600); err != nil {
		return nil, err
	}
	k.base = fmt.Sprintf("https://127.0.0.1:%d", ports[2])
	k.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
	}}
	if err := k.run(apiBin, "kube-apiserver.log",
		"--etcd-servers="+etcdClient,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(ports[2]),
		"--cert-dir="+filepath.Join(dir, "certs"),
		"--tls-cert-file="+filepath.Join(dir, "serving.crt"),
		"--tls-private-key-file="+filepath.Join(dir, "serving.key"),
		"--token-auth-file="+filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=AlwaysAllow",
		"--service-account-key-file="+filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=10.0.0.0/24",
	); err != nil {
		return nil, err
	}

	// Ready: /readyz answers 200 once etcd is reached and the post-start
	// hooks (default namespaces, priority classes, RBAC) have run.
	if err := k.await(90*time.Second, "/readyz", func() (bool, error) {
		code, _, err := k.do(context.Background(), http.MethodGet, "/readyz", nil)
		return code == http.StatusOK, err
	}); err != nil {
		return nil, err
	}
	if err := k.installCRDs(); err != nil {
		return nil, err
	}
	return k, nil
}

// run starts a server process, its output into the log file, to be killed
// with the test binary if that dies first (see procattr_*_test.go).
func (k *kubeAPI) run(bin, log string, args ...string) error {
	f, err := os.Create(filepath.Join(k.dir, log))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = dieWithParent()
	if err := cmd.Start(); err != nil {
		f.Close()
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); f.Close() }()
	k.procs = append(k.procs, cmd)
	k.exited = append(k.exited, exited)
	return nil
}

// await polls check every 100ms until it says true, failing early when a
// server process exits, with the end of its log.
func (k *kubeAPI) await(timeout time.Duration, what string, check func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		ok, err := check()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		for i, exited := range k.exited {
			select {
			case err := <-exited:
				exited <- err
				return fmt.Errorf("%s exited (%v) waiting for %s:\n%s", filepath.Base(k.procs[i].Path), err, what, k.logTail(i))
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s after %v (last error %v):\n%s", what, timeout, last, k.logTail(len(k.procs)-1))
		}
		<-tick.C
	}
}

func (k *kubeAPI) logTail(i int) string {
	names := []string{"etcd.log", "kube-apiserver.log"}
	data, _ := os.ReadFile(filepath.Join(k.dir, names[i]))
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

func (k *kubeAPI) stop() {
	for i := len(k.procs) - 1; i >= 0; i-- {
		p := k.procs[i]
		p.Process.Signal(os.Interrupt)
		select {
		case err := <-k.exited[i]:
			k.exited[i] <- err
		case <-time.After(10 * time.Second):
			p.Process.Kill()
			<-k.exited[i]
		}
	}
	os.RemoveAll(k.dir)
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// writeKeys writes serving.crt and serving.key (a self-signed certificate
// for 127.0.0.1) and sa.key, sa.pub (the service-account signing key pair)
// into dir, and returns the certificate.
func writeKeys(dir string) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "voik chart test apiserver"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for name, data := range map[string][]byte{
		"serving.crt": certPEM,
		"serving.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		"sa.key":      pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(sa)}),
		"sa.pub":      pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPub}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	return certPEM, nil
}

// do sends a request with the token and returns the status code, the body
// and the server's warnings (Warning headers).
func (k *kubeAPI) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	code, data, _, err := k.doWarn(ctx, method, path, body)
	return code, data, err
}

func (k *kubeAPI) doWarn(ctx context.Context, method, path string, body []byte) (int, []byte, []string, error) {
	req, err := http.NewRequestWithContext(ctx, method, k.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+k.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, resp.Header.Values("Warning"), err
}

// apiError is a request the server refused: its code and Status.
type apiError struct {
	Code   int
	Status metav1.Status
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Code, e.Status.Reason, e.Status.Message)
}

// resource finds the REST resource of apiVersion and kind by discovery.
func (k *kubeAPI) resource(ctx context.Context, apiVersion, kind string) (metav1.APIResource, error) {
	key := apiVersion + "/" + kind
	k.mu.Lock()
	r, ok := k.resources[key]
	k.mu.Unlock()
	if ok {
		return r, nil
	}
	path := "/apis/" + apiVersion
	if apiVersion == "v1" {
		path = "/api/v1"
	}
	code, data, err := k.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return r, err
	}
	if code != http.StatusOK {
		return r, fmt.Errorf("discovery of %s: %d %s", apiVersion, code, data)
	}
	var list metav1.APIResourceList
	if err := json.Unmarshal(data, &list); err != nil {
		return r, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, res := range list.APIResources {
		if !strings.Contains(res.Name, "/") { // not a subresource
			k.resources[apiVersion+"/"+res.Kind] = res
		}
	}
	if r, ok = k.resources[key]; !ok {
		return r, fmt.Errorf("the API server does not serve %s %s", apiVersion, kind)
	}
	return r, nil
}

// objectPath is the collection an object is created in.
func (k *kubeAPI) objectPath(ctx context.Context, obj map[string]any) (string, error) {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	res, err := k.resource(ctx, apiVersion, kind)
	if err != nil {
		return "", err
	}
	prefix := "/apis/" + apiVersion
	if apiVersion == "v1" {
		prefix = "/api/v1"
	}
	if !res.Namespaced {
		return prefix + "/" + res.Name, nil
	}
	meta, _ := obj["metadata"].(map[string]any)
	ns, _ := meta["namespace"].(string)
	if ns == "" {
		return "", fmt.Errorf("%s %v has no namespace", kind, meta["name"])
	}
	return prefix + "/namespaces/" + url.PathEscape(ns) + "/" + res.Name, nil
}

// create POSTs obj with strict field validation (an unknown or duplicate
// field is refused by the server too); dryRun asks the server to validate,
// default and admit it without storing it. It returns the object as the
// server made it, and its warnings (Pod Security's among them).
func (k *kubeAPI) create(ctx context.Context, obj map[string]any, dryRun bool) (map[string]any, []string, error) {
	path, err := k.objectPath(ctx, obj)
	if err != nil {
		return nil, nil, err
	}
	path += "?fieldValidation=Strict"
	if dryRun {
		path += "&dryRun=All"
	}
	body, err := json.Marshal(obj)
	if err != nil {
		return nil, nil, err
	}
	code, data, warnings, err := k.doWarn(ctx, http.MethodPost, path, body)
	if err != nil {
		return nil, nil, err
	}
	if code != http.StatusCreated && code != http.StatusOK {
		e := &apiError{Code: code}
		if jerr := json.Unmarshal(data, &e.Status); jerr != nil || e.Status.Kind != "Status" {
			e.Status.Message = string(data)
		}
		return nil, warnings, e
	}
	var made map[string]any
	return made, warnings, json.Unmarshal(data, &made)
}

// get reads an object back: kind and name in namespace ns ("" for a
// cluster-scoped one).
func (k *kubeAPI) get(ctx context.Context, apiVersion, kind, ns, name string) (map[string]any, error) {
	obj := map[string]any{"apiVersion": apiVersion, "kind": kind, "metadata": map[string]any{"namespace": ns}}
	path, err := k.objectPath(ctx, obj)
	if err != nil {
		return nil, err
	}
	code, data, err := k.do(ctx, http.MethodGet, path+"/"+url.PathEscape(name), nil)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("get %s %s/%s: %d %s", kind, ns, name, code, data)
	}
	var got map[string]any
	return got, json.Unmarshal(data, &got)
}

// installCRDs defines the Prometheus Operator's ServiceMonitor and
// PrometheusRule, so that the chart's objects of those kinds are created
// too. Their schemas keep the spec as it is (preserve unknown fields): the
// server checks their metadata; their specs are checked by the strict
// decoding into the operator's Go types and the PromQL parser.
func (k *kubeAPI) installCRDs() error {
	ctx := context.Background()
	for _, kind := range []struct{ kind, plural string }{
		{"ServiceMonitor", "servicemonitors"},
		{"PrometheusRule", "prometheusrules"},
	} {
		crd := fmt.Sprintf(`apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: %[2]s.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names:
    kind: %[1]s
    listKind: %[1]sList
    plural: %[2]s
    singular: %[3]s
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            spec:
              type: object
              x-kubernetes-preserve-unknown-fields: true
`, kind.kind, kind.plural, strings.ToLower(kind.kind))
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(crd), &obj); err != nil {
			return err
		}
		if _, _, err := k.create(ctx, obj, false); err != nil {
			return fmt.Errorf("CRD %s: %w", kind.plural, err)
		}
	}
	// Served once discovery lists them (a CRD is established asynchronously).
	return k.await(30*time.Second, "the monitoring.coreos.com/v1 CRDs", func() (bool, error) {
		k.mu.Lock()
		delete(k.resources, "monitoring.coreos.com/v1/ServiceMonitor")
		delete(k.resources, "monitoring.coreos.com/v1/PrometheusRule")
		k.mu.Unlock()
		_, err1 := k.resource(ctx, "monitoring.coreos.com/v1", "ServiceMonitor")
		_, err2 := k.resource(ctx, "monitoring.coreos.com/v1", "PrometheusRule")
		return err1 == nil && err2 == nil, errors.Join(err1, err2)
	})
}

// kubeconfig writes a kubeconfig for this server (for helm) and returns its path.
func (k *kubeAPI) kubeconfig(t *testing.T) string {
	t.Helper()
	cert, err := os.ReadFile(filepath.Join(k.dir, "serving.crt"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{
		"apiVersion": "v1", "kind": "Config", "current-context": "chart-test",
		"clusters": []any{map[string]any{"name": "chart-test", "cluster": map[string]any{
			"server": k.base, "certificate-authority-data": cert,
		}}},
		"users":    []any{map[string]any{"name": "chart-test", "user": map[string]any{"token": k.token}}},
		"contexts": []any{map[string]any{"name": "chart-test", "context": map[string]any{"cluster": "chart-test", "user": "chart-test"}}},
	}
	data, err := json.Marshal(cfg) // []byte becomes base64, as kubeconfig's *-data fields are
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
