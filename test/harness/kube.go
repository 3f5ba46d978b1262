package harness

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Cluster is a single-node Kubernetes on a CRI test daemon (StartKubernetes): etcd,
// kube-apiserver and a kubelet from _output/k8s (make k8s-bins), no scheduler or
// controller-manager (pods name their node), the node called "localhost".
type Cluster struct {
	Dir        string
	Kubeconfig string
	bin        string
	daemon     *Daemon
	procs      []*exec.Cmd
	// cgroupRoot is the kubelet's cgroup root, made in every hierarchy.
	cgroupRoot string
	// sysctls are the host values the kubelet rewrites, as they were.
	sysctls map[string][]byte
	// existed are the host paths the kubelet makes whatever its config says
	// that were there before (else Stop removes them).
	existed map[string]bool
}

// kubeletHostPaths are made by the kubelet even with a private root and
// pod log directory: its device-plugin socket and the containers' log links.
var kubeletHostPaths = []string{"/var/lib/kubelet", "/var/log/containers"}

// kubeletSysctls are the host sysctls the kubelet sets at start.
var kubeletSysctls = []string{"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory"}

// NodeName is the cluster's one node.
const NodeName = "localhost"

// StartKubernetes starts the cluster on d (a StartCRI daemon) and waits for its node.
func StartKubernetes(ctx context.Context, d *Daemon) (*Cluster, error) {
	if d.cri == nil {
		return nil, errors.New("kubernetes needs a CRI daemon (StartCRI)")
	}
	bin := filepath.Join(d.root, "_output", "k8s")
	for _, b := range []string{"etcd", "kube-apiserver", "kubelet", "kubectl"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return nil, fmt.Errorf("%s missing (run `make k8s-bins`): %w", b, err)
		}
	}
	c := &Cluster{Dir: filepath.Join(d.Dir, "k8s"), bin: bin, daemon: d, sysctls: map[string][]byte{},
		cgroupRoot: strings.TrimPrefix(d.cri.cgroupParent, "/") + "-kubelet"}
	for _, s := range kubeletSysctls {
		v, err := os.ReadFile(filepath.Join("/proc/sys", s))
		if err != nil {
			return nil, err
		}
		c.sysctls[s] = v
	}
	c.existed = map[string]bool{}
	for _, p := range kubeletHostPaths {
		if _, err := os.Stat(p); err == nil {
			c.existed[p] = true
		}
	}
	if err := c.start(ctx); err != nil {
		_ = c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) start(ctx context.Context) error {
	pki := filepath.Join(c.Dir, "pki")
	for _, dir := range []string{pki, filepath.Join(c.Dir, "etcd"), filepath.Join(c.Dir, "kubelet"), filepath.Join(c.Dir, "logs"), filepath.Join(c.Dir, "pods")} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
	}
	if err := writePKI(pki); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	etcdClient, etcdPeer, apiPort, kubeletPort := ports[0], ports[1], ports[2], ports[3]
	if err := c.run("etcd", "--data-dir", filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdClient), "--advertise-client-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdClient),
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer), "--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", etcdPeer),
		"--initial-cluster", fmt.Sprintf("default=http://127.0.0.1:%d", etcdPeer)); err != nil {
		return err
	}
	p := func(name string) string { return filepath.Join(pki, name) }
	if err := c.run("kube-apiserver", "--etcd-servers", fmt.Sprintf("http://127.0.0.1:%d", etcdClient),
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", fmt.Sprint(apiPort),
		"--cert-dir", pki, "--tls-cert-file", p("apiserver.crt"), "--tls-private-key-file", p("apiserver.key"), "--client-ca-file", p("ca.crt"),
		"--service-account-key-file", p("sa.pub"), "--service-account-signing-key-file", p("sa.key"), "--service-account-issuer", "https://localhost",
		"--kubelet-client-certificate", p("apiserver-kubelet.crt"), "--kubelet-client-key", p("apiserver-kubelet.key"),
		"--kubelet-certificate-authority", p("ca.crt"), "--authorization-mode", "Node,RBAC",
		// On 127.0.0.1 the endpoint reconciler refuses the loopback address.
		"--service-cluster-ip-range", "10.0.0.0/24", "--endpoint-reconciler-type", "none"); err != nil {
		return err
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	for _, u := range []string{"admin", "kubelet"} {
		if err := writeKubeconfig(filepath.Join(c.Dir, u+".kubeconfig"), server, p("ca.crt"), p(u+".crt"), p(u+".key")); err != nil {
			return err
		}
	}
	c.Kubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	if err := c.waitFor(ctx, time.Minute, "the API server", "get", "--raw", "/readyz"); err != nil {
		return err
	}
	// The kubelet's cgroup root must exist in every hierarchy.
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range append(hierarchies, "/sys/fs/cgroup") {
		if fi, err := os.Stat(filepath.Join(h, "cgroup.procs")); err == nil && !fi.IsDir() {
			_ = os.MkdirAll(filepath.Join(h, c.cgroupRoot), 0o755)
		}
	}
	config := filepath.Join(c.Dir, "kubelet.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /%s
failCgroupV1: false
oomScoreAdj: 0
makeIPTablesUtilChains: false
containerRuntimeEndpoint: unix://%s
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzPort: 0
tlsCertFile: %s
tlsPrivateKeyFile: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %s}
authorization: {mode: AlwaysAllow}
failSwapOn: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {}
localStorageCapacityIsolation: false
podLogsDir: %s
resolvConf: /etc/resolv.conf
`, c.cgroupRoot, c.daemon.Address, kubeletPort, p("kubelet.crt"), p("kubelet.key"), p("ca.crt"), filepath.Join(c.Dir, "pods"))), 0o600); err != nil {
		return err
	}
	if err := c.run("kubelet", "--config", config, "--kubeconfig", filepath.Join(c.Dir, "kubelet.kubeconfig"),
		"--root-dir", filepath.Join(c.Dir, "kubelet"), "--hostname-override", NodeName); err != nil {
		return err
	}
	if err := c.waitFor(ctx, 40*time.Second, "the node", "wait", "--for=condition=Ready", "node/"+NodeName, "--timeout=5s"); err != nil {
		return fmt.Errorf("%w\nkubelet log tail:\n%s", err, fileTail(filepath.Join(c.Dir, "logs", "kubelet.log"), 3000))
	}
	// No controller-manager: what it would make for pods, made here.
	if out, err := c.Kubectl(ctx, "create", "serviceaccount", "default").CombinedOutput(); err != nil {
		return fmt.Errorf("default service account: %v: %s", err, out)
	}
	if out, err := c.Kubectl(ctx, "create", "configmap", "kube-root-ca.crt", "--from-file=ca.crt="+p("ca.crt")).CombinedOutput(); err != nil {
		return fmt.Errorf("kube-root-ca.crt: %v: %s", err, out)
	}
	return nil
}

// run starts one of the cluster's processes, logging to logs/<name>.log.
func (c *Cluster) run(name string, args ...string) error {
	logf, err := os.Create(filepath.Join(c.Dir, "logs", name+".log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = c.daemon.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	c.procs = append(c.procs, cmd)
	return nil
}

// waitFor runs kubectl args until it succeeds.
func (c *Cluster) waitFor(ctx context.Context, timeout time.Duration, what string, args ...string) error {
	deadline := time.Now().Add(timeout)
	for {
		out, err := c.Kubectl(ctx, args...).CombinedOutput()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %v: %s", what, timeout, err, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Kubectl is kubectl as the cluster's admin.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	cmd.Env = c.daemon.env
	return cmd
}

// KubectlPath is the kubectl binary, for a command run under a pty.
func (c *Cluster) KubectlPath() string { return filepath.Join(c.bin, "kubectl") }

// Stop deletes every pod, stops the processes and puts back what the kubelet changed on
// the host: its sysctls, its /var/lib/kubelet socket, its mounts and cgroup root. The CRI
// daemon stays (its Stop removes what is left of the pods).
func (c *Cluster) Stop() error {
	var errs []error
	if c.Kubeconfig != "" && len(c.procs) >= 3 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if out, err := c.Kubectl(ctx, "delete", "pods", "--all", "--grace-period=1", "--wait=true").CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("delete pods: %v: %s", err, out))
		}
		cancel()
	}
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		_ = p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.Process.Kill()
			<-done
		}
	}
	for s, v := range c.sysctls {
		if now, err := os.ReadFile(filepath.Join("/proc/sys", s)); err == nil && string(now) != string(v) {
			errs = append(errs, os.WriteFile(filepath.Join("/proc/sys", s), v, 0o644))
		}
	}
	for _, p := range kubeletHostPaths {
		if !c.existed[p] {
			errs = append(errs, os.RemoveAll(p))
		}
	}
	// The kubelet bind-mounts its root dir on itself, and pods' volumes below it.
	if err := unmountUnder(filepath.Join(c.Dir, "kubelet")); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, rmdirCgroups(cgroupTree(c.cgroupRoot)))
	return errors.Join(errs...)
}

// freePorts finds n free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// writePKI makes the cluster's CA, its certificates and the service account key.
func writePKI(dir string) error {
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	now := time.Now()
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sst-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, "ca.crt"), "CERTIFICATE", caDER); err != nil {
		return err
	}
	for i, c := range []struct {
		name, cn, org string
		ips           []net.IP
	}{
		{"apiserver", "kube-apiserver", "", []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 0, 0, 1)}},
		{"admin", "admin", "system:masters", nil},
		{"kubelet", "system:node:" + NodeName, "system:nodes", []net.IP{net.IPv4(127, 0, 0, 1)}},
		{"apiserver-kubelet", "kube-apiserver-kubelet-client", "system:masters", nil},
	} {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return err
		}
		subject := pkix.Name{CommonName: c.cn}
		if c.org != "" {
			subject.Organization = []string{c.org}
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: subject,
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			DNSNames:    []string{"localhost"}, IPAddresses: c.ips}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, c.name+".crt"), "CERTIFICATE", der); err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, c.name+".key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key)); err != nil {
			return err
		}
	}
	sa, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, "sa.key"), "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(sa)); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pub)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

func writeKubeconfig(path, server, ca, cert, key string) error {
	return os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: sst, cluster: {server: %q, certificate-authority: %q}}]
users: [{name: u, user: {client-certificate: %q, client-key: %q}}]
contexts: [{name: c, context: {cluster: sst, user: u}}]
current-context: c
`, server, ca, cert, key)), 0o600)
}
