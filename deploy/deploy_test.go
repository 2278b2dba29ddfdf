// Package deploy holds the deployment artifacts of secretless-broker (the
// container image, Kubernetes manifests, a systemd unit) and their tests.
//
// Docker and Kubernetes cannot run on the machines this project is built on,
// so the tests check the artifacts statically: they parse every manifest and
// check the references between them and against the broker's own config
// parser, health endpoints and flags. The recipe the image builds with
// (deploy/build.sh) is run for real, unless -short.
package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/secretless-broker/secretless-broker/internal/broker"
	"github.com/secretless-broker/secretless-broker/internal/config"
	"github.com/secretless-broker/secretless-broker/internal/health"
	"github.com/secretless-broker/secretless-broker/internal/plugins"
	"github.com/secretless-broker/secretless-broker/internal/providers"
)

// Paths, relative to this directory.
const (
	dockerfilePath  = "Dockerfile"
	buildScriptPath = "build.sh"
	healthcheckPath = "healthcheck.sh"
	systemdUnitPath = "systemd/secretless-broker.service"
	kubeDir         = "kubernetes"
	kubeShared      = "kubernetes/shared.yaml"
	repoRoot        = ".."
)

// Defaults of the broker's command line (see internal/cli).
const (
	defaultPluginDir       = "/usr/local/lib/secretless"
	defaultHealthAddr      = ":5335"
	defaultShutdownTimeout = 30 * time.Second
	// The image's plugin directory and checksum file.
	imagePluginDir = "/usr/local/lib/secretless"
	imageSumFile   = "/etc/secretless/PLUGINS_SHA256SUM.txt"
	imageUID       = 10001
)

// ---------------------------------------------------------------------------
// Kubernetes objects: only the fields the manifests use. Decoding is strict,
// so a misspelt or unexpected field fails the test instead of being ignored
// (as it would be by these structs, though not by a cluster).

type objectMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type configMap struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   objectMeta        `yaml:"metadata"`
	Immutable  *bool             `yaml:"immutable"`
	Data       map[string]string `yaml:"data"`
}

type secret struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   objectMeta        `yaml:"metadata"`
	Type       string            `yaml:"type"`
	Immutable  *bool             `yaml:"immutable"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
}

func (s *secret) hasKey(k string) bool {
	_, a := s.Data[k]
	_, b := s.StringData[k]
	return a || b
}

type deployment struct {
	APIVersion string         `yaml:"apiVersion"`
	Kind       string         `yaml:"kind"`
	Metadata   objectMeta     `yaml:"metadata"`
	Spec       deploymentSpec `yaml:"spec"`
}

type deploymentSpec struct {
	Replicas *int `yaml:"replicas"`
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
	Strategy *struct {
		Type          string `yaml:"type"`
		RollingUpdate *struct {
			MaxUnavailable intOrString `yaml:"maxUnavailable"`
			MaxSurge       intOrString `yaml:"maxSurge"`
		} `yaml:"rollingUpdate"`
	} `yaml:"strategy"`
	Template struct {
		Metadata objectMeta `yaml:"metadata"`
		Spec     podSpec    `yaml:"spec"`
	} `yaml:"template"`
}

type podSpec struct {
	AutomountServiceAccountToken  *bool               `yaml:"automountServiceAccountToken"`
	TerminationGracePeriodSeconds *int64              `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               *podSecurityContext `yaml:"securityContext"`
	InitContainers                []container         `yaml:"initContainers"`
	Containers                    []container         `yaml:"containers"`
	Volumes                       []volume            `yaml:"volumes"`
}

type seccompProfile struct {
	Type string `yaml:"type"`
}

type podSecurityContext struct {
	RunAsNonRoot       *bool           `yaml:"runAsNonRoot"`
	RunAsUser          *int64          `yaml:"runAsUser"`
	RunAsGroup         *int64          `yaml:"runAsGroup"`
	FSGroup            *int64          `yaml:"fsGroup"`
	SupplementalGroups []int64         `yaml:"supplementalGroups"`
	SeccompProfile     *seccompProfile `yaml:"seccompProfile"`
}

type container struct {
	Name            string           `yaml:"name"`
	Image           string           `yaml:"image"`
	ImagePullPolicy string           `yaml:"imagePullPolicy"`
	RestartPolicy   string           `yaml:"restartPolicy"`
	Command         []string         `yaml:"command"`
	Args            []string         `yaml:"args"`
	Env             []envVar         `yaml:"env"`
	EnvFrom         []envFromSource  `yaml:"envFrom"`
	Ports           []containerPort  `yaml:"ports"`
	StartupProbe    *probe           `yaml:"startupProbe"`
	ReadinessProbe  *probe           `yaml:"readinessProbe"`
	LivenessProbe   *probe           `yaml:"livenessProbe"`
	VolumeMounts    []volumeMount    `yaml:"volumeMounts"`
	SecurityContext *securityContext `yaml:"securityContext"`
	Resources       *struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		SecretKeyRef    *keyRef `yaml:"secretKeyRef"`
		ConfigMapKeyRef *keyRef `yaml:"configMapKeyRef"`
	} `yaml:"valueFrom"`
}

type envFromSource struct {
	Prefix       string `yaml:"prefix"`
	SecretRef    *ref   `yaml:"secretRef"`
	ConfigMapRef *ref   `yaml:"configMapRef"`
}

type ref struct {
	Name     string `yaml:"name"`
	Optional *bool  `yaml:"optional"`
}

type keyRef struct {
	Name     string `yaml:"name"`
	Key      string `yaml:"key"`
	Optional *bool  `yaml:"optional"`
}

type containerPort struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
	Protocol      string `yaml:"protocol"`
}

type probe struct {
	HTTPGet *struct {
		Path   string      `yaml:"path"`
		Port   intOrString `yaml:"port"`
		Scheme string      `yaml:"scheme"`
	} `yaml:"httpGet"`
	InitialDelaySeconds int `yaml:"initialDelaySeconds"`
	PeriodSeconds       int `yaml:"periodSeconds"`
	TimeoutSeconds      int `yaml:"timeoutSeconds"`
	SuccessThreshold    int `yaml:"successThreshold"`
	FailureThreshold    int `yaml:"failureThreshold"`
}

type volumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
	SubPath   string `yaml:"subPath"`
	ReadOnly  bool   `yaml:"readOnly"`
}

type securityContext struct {
	RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
	RunAsUser                *int64 `yaml:"runAsUser"`
	RunAsGroup               *int64 `yaml:"runAsGroup"`
	AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
	ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
	Privileged               *bool  `yaml:"privileged"`
	Capabilities             *struct {
		Add  []string `yaml:"add"`
		Drop []string `yaml:"drop"`
	} `yaml:"capabilities"`
	SeccompProfile *seccompProfile `yaml:"seccompProfile"`
}

type keyToPath struct {
	Key  string `yaml:"key"`
	Path string `yaml:"path"`
}

type configMapProjection struct {
	Name     string      `yaml:"name"`
	Items    []keyToPath `yaml:"items"`
	Optional *bool       `yaml:"optional"`
}

type volume struct {
	Name     string `yaml:"name"`
	EmptyDir *struct {
		Medium    string `yaml:"medium"`
		SizeLimit string `yaml:"sizeLimit"`
	} `yaml:"emptyDir"`
	ConfigMap *configMapProjection `yaml:"configMap"`
	Secret    *struct {
		SecretName string      `yaml:"secretName"`
		Items      []keyToPath `yaml:"items"`
		Optional   *bool       `yaml:"optional"`
	} `yaml:"secret"`
	Projected *struct {
		Sources []struct {
			ConfigMap *configMapProjection `yaml:"configMap"`
			Secret    *configMapProjection `yaml:"secret"`
		} `yaml:"sources"`
	} `yaml:"projected"`
}

// intOrString is Kubernetes' IntOrString: a port number or a port name.
type intOrString struct {
	Int    int
	Str    string
	IsStr  bool
	Loaded bool
}

func (v *intOrString) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a number or a name", n.Line)
	}
	v.Loaded = true
	if n.Tag == "!!int" {
		i, err := strconv.Atoi(n.Value)
		if err != nil {
			return fmt.Errorf("line %d: %w", n.Line, err)
		}
		v.Int = i
		return nil
	}
	v.Str, v.IsStr = n.Value, true
	return nil
}

// ---------------------------------------------------------------------------
// Loading manifests.

// bundle is what one "kubectl apply" of a variant creates: shared.yaml plus
// one sidecar-*.yaml.
type bundle struct {
	name        string
	configMaps  map[string]*configMap
	secrets     map[string]*secret
	deployments []*deployment
}

// object is any of the kinds the manifests hold: decoding every document
// into it strictly catches unknown fields with their line in the file; the
// fields that do not belong to a kind are refused afterwards.
type object struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   objectMeta        `yaml:"metadata"`
	Immutable  *bool             `yaml:"immutable"`
	Type       string            `yaml:"type"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       *deploymentSpec   `yaml:"spec"`
}

// addManifests decodes every document of one file into b.
func (b *bundle) addManifests(file string, data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	n := 0
	for {
		var o object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		if o.APIVersion == "" && o.Kind == "" && o.Metadata.Name == "" {
			continue // a document of comments only
		}
		n++
		where := fmt.Sprintf("%s: %s %q", file, o.Kind, o.Metadata.Name)
		if o.Metadata.Name == "" {
			return fmt.Errorf("%s: a %s without metadata.name", file, o.Kind)
		}
		var extra []string
		switch k := o.APIVersion + " " + o.Kind; k {
		case "v1 ConfigMap":
			if o.Type != "" || o.StringData != nil || o.Spec != nil {
				extra = append(extra, "type, stringData or spec")
			}
			if b.configMaps[o.Metadata.Name] != nil {
				return fmt.Errorf("%s: defined twice", where)
			}
			b.configMaps[o.Metadata.Name] = &configMap{APIVersion: o.APIVersion, Kind: o.Kind, Metadata: o.Metadata, Immutable: o.Immutable, Data: o.Data}
		case "v1 Secret":
			if o.Spec != nil {
				extra = append(extra, "spec")
			}
			if b.secrets[o.Metadata.Name] != nil {
				return fmt.Errorf("%s: defined twice", where)
			}
			b.secrets[o.Metadata.Name] = &secret{APIVersion: o.APIVersion, Kind: o.Kind, Metadata: o.Metadata, Type: o.Type,
				Immutable: o.Immutable, Data: o.Data, StringData: o.StringData}
		case "apps/v1 Deployment":
			if o.Type != "" || o.Data != nil || o.StringData != nil || o.Immutable != nil {
				extra = append(extra, "type, data, stringData or immutable")
			}
			if o.Spec == nil {
				return fmt.Errorf("%s: no spec", where)
			}
			b.deployments = append(b.deployments, &deployment{APIVersion: o.APIVersion, Kind: o.Kind, Metadata: o.Metadata, Spec: *o.Spec})
		default:
			return fmt.Errorf("%s: kind %q is not one these tests know how to check", where, k)
		}
		if len(extra) > 0 {
			return fmt.Errorf("%s: has %s, which a %s does not have", where, extra[0], o.Kind)
		}
	}
	if n == 0 {
		return fmt.Errorf("%s: no documents", file)
	}
	return nil
}

// variantFiles lists deploy/kubernetes/sidecar-*.yaml and fails if any other
// file there would go unchecked.
func variantFiles(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(kubeDir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		p := path.Join(kubeDir, e.Name())
		switch {
		case p == kubeShared:
		case strings.HasPrefix(e.Name(), "sidecar-") && strings.HasSuffix(e.Name(), ".yaml") && e.Type().IsRegular():
			out = append(out, p)
		default:
			t.Errorf("%s: not checked by these tests (expected only %s and sidecar-*.yaml)", p, kubeShared)
		}
	}
	if len(out) < 2 {
		t.Fatalf("want a localhost and a unix-socket variant in %s, found %v", kubeDir, out)
	}
	return out
}

func loadBundle(variant string) (*bundle, error) {
	b := &bundle{name: strings.TrimSuffix(path.Base(variant), ".yaml"),
		configMaps: map[string]*configMap{}, secrets: map[string]*secret{}}
	for _, f := range []string{kubeShared, variant} {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		if err := b.addManifests(f, data); err != nil {
			return nil, err
		}
	}
	if len(b.deployments) != 1 {
		return nil, fmt.Errorf("%s: want exactly one Deployment, found %d", variant, len(b.deployments))
	}
	return b, nil
}

// ---------------------------------------------------------------------------
// The pod: which container is the broker, its flags, its files.

type pod struct {
	b    *bundle
	d    *deployment
	spec *podSpec
	// broker is the container running the broker; brokerInit reports it is a
	// native sidecar (an init container with restartPolicy Always) at index
	// brokerIndex of initContainers.
	broker      *container
	brokerInit  bool
	brokerIndex int
	flags       map[string]string
}

// brokerValueFlags are the broker's flags that take a value.
var brokerValueFlags = map[string]bool{"f": true, "p": true, "s": true, "health-addr": true,
	"shutdown-timeout": true, "log-format": true, "profile": true}

// parseBrokerFlags parses a broker command line (after the program name) the
// way Go's flag package does: -x V, -x=V, --x V; booleans stand alone.
func parseBrokerFlags(args []string) (map[string]string, error) {
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			return nil, fmt.Errorf("unexpected argument %q (subcommands and arguments do not run the broker)", a)
		}
		name := strings.TrimLeft(a, "-")
		value, hasValue := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, value, hasValue = k, v, true
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("flag -%s given twice", name)
		}
		if brokerValueFlags[name] && !hasValue {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("flag -%s needs a value", name)
			}
			i++
			value = args[i]
		}
		out[name] = value
	}
	return out, nil
}

func isBrokerBinary(s string) bool { return path.Base(s) == "secretless-broker" }

// runsBroker reports whether c runs the broker itself (not a subcommand).
func runsBroker(c *container) bool {
	return len(c.Command) > 0 && isBrokerBinary(c.Command[0]) &&
		!(len(c.Args) > 0 && !strings.HasPrefix(c.Args[0], "-"))
}

func newPod(b *bundle, d *deployment) (*pod, error) {
	p := &pod{b: b, d: d, spec: &d.Spec.Template.Spec}
	n := 0
	for i := range p.spec.InitContainers {
		if c := &p.spec.InitContainers[i]; runsBroker(c) {
			p.broker, p.brokerInit, p.brokerIndex = c, true, i
			n++
		}
	}
	for i := range p.spec.Containers {
		if c := &p.spec.Containers[i]; runsBroker(c) {
			p.broker, p.brokerInit = c, false
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("deployment %s: want exactly one container whose command runs secretless-broker, found %d", d.Metadata.Name, n)
	}
	flags, err := parseBrokerFlags(append(slices.Clone(p.broker.Command[1:]), p.broker.Args...))
	if err != nil {
		return nil, fmt.Errorf("container %s: %w", p.broker.Name, err)
	}
	p.flags = flags
	return p, nil
}

func (p *pod) flag(name, def string) string {
	if v, ok := p.flags[name]; ok {
		return v
	}
	return def
}

func (p *pod) allContainers() []*container {
	var out []*container
	for i := range p.spec.InitContainers {
		out = append(out, &p.spec.InitContainers[i])
	}
	for i := range p.spec.Containers {
		out = append(out, &p.spec.Containers[i])
	}
	return out
}

func (p *pod) volume(name string) *volume {
	for i := range p.spec.Volumes {
		if p.spec.Volumes[i].Name == name {
			return &p.spec.Volumes[i]
		}
	}
	return nil
}

// mountFor returns the mount of c that holds path (the longest mount path
// that is path or a parent of it), and path relative to it.
func mountFor(c *container, file string) (*volumeMount, string, bool) {
	var best *volumeMount
	rel := ""
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		mp := strings.TrimSuffix(m.MountPath, "/")
		var r string
		switch {
		case file == mp:
			r = m.SubPath
		case strings.HasPrefix(file, mp+"/") && m.SubPath == "":
			r = strings.TrimPrefix(file, mp+"/")
		default:
			continue
		}
		if best == nil || len(mp) > len(strings.TrimSuffix(best.MountPath, "/")) {
			best, rel = m, r
		}
	}
	return best, rel, best != nil
}

// fileSource says where a file that a container sees comes from.
type fileSource struct {
	mount     *volumeMount
	vol       *volume
	configMap string // set when the file is a ConfigMap key
	key       string
	content   string
}

func itemKey(items []keyToPath, rel string) (string, bool) {
	if len(items) == 0 {
		return rel, !strings.Contains(rel, "/")
	}
	for _, it := range items {
		if it.Path == rel {
			return it.Key, true
		}
	}
	return "", false
}

func (p *pod) fileIn(c *container, file string) (fileSource, error) {
	m, rel, ok := mountFor(c, file)
	if !ok {
		return fileSource{}, fmt.Errorf("container %s: %s is on no volume (it would come from the image)", c.Name, file)
	}
	v := p.volume(m.Name)
	if v == nil {
		return fileSource{}, fmt.Errorf("container %s: mount %s names volume %q, which the pod does not define", c.Name, m.MountPath, m.Name)
	}
	src := fileSource{mount: m, vol: v}
	var cms []*configMapProjection
	if v.ConfigMap != nil {
		cms = append(cms, v.ConfigMap)
	}
	if v.Projected != nil {
		for _, s := range v.Projected.Sources {
			if s.ConfigMap != nil {
				cms = append(cms, s.ConfigMap)
			}
		}
	}
	for _, cm := range cms {
		key, ok := itemKey(cm.Items, rel)
		if !ok {
			continue
		}
		obj := p.b.configMaps[cm.Name]
		if obj == nil {
			return src, fmt.Errorf("container %s: %s comes from ConfigMap %q, which the manifests do not define", c.Name, file, cm.Name)
		}
		content, ok := obj.Data[key]
		if !ok {
			if len(cm.Items) == 0 {
				continue // not this source: another may have the key
			}
			return src, fmt.Errorf("container %s: %s comes from key %q of ConfigMap %q, which has no such key", c.Name, file, key, cm.Name)
		}
		src.configMap, src.key, src.content = cm.Name, key, content
		return src, nil
	}
	return src, nil
}

// ---------------------------------------------------------------------------
// The checks on one pod. Each returns every problem it finds.

type podCheck struct {
	name  string
	check func(p *pod) []error
}

var podChecks = []podCheck{
	{"references exist", checkReferences},
	{"every object is used", checkAllUsed},
	{"config parses as version 2", checkConfig},
	{"env credentials come from the Secret", checkEnvCredentials},
	{"connectors are built in or shipped", checkConnectors},
	{"probes hit the health port and paths", checkProbes},
	{"plugin dir is the verified emptyDir", checkPluginDir},
	{"checksum file comes from an immutable ConfigMap", checkChecksumFile},
	{"containers run as non-root", checkNonRoot},
	{"read-only root with an exec-able TMPDIR", checkTmpDir},
	{"only the broker sees the Secret", checkSecretOnlyInBroker},
	{"grace period covers the shutdown timeout", checkGracePeriod},
	{"listeners stay inside the pod", checkListeners},
}

func checkReferences(p *pod) []error {
	var errs []error
	names := map[string]bool{}
	for _, v := range p.spec.Volumes {
		if names[v.Name] {
			errs = append(errs, fmt.Errorf("volume %q defined twice", v.Name))
		}
		names[v.Name] = true
		checkCM := func(cm *configMapProjection) {
			obj := p.b.configMaps[cm.Name]
			if obj == nil {
				if cm.Optional == nil || !*cm.Optional {
					errs = append(errs, fmt.Errorf("volume %q: ConfigMap %q is not in the manifests", v.Name, cm.Name))
				}
				return
			}
			for _, it := range cm.Items {
				if _, ok := obj.Data[it.Key]; !ok {
					errs = append(errs, fmt.Errorf("volume %q: ConfigMap %q has no key %q", v.Name, cm.Name, it.Key))
				}
			}
		}
		checkSecret := func(name string, items []keyToPath) {
			obj := p.b.secrets[name]
			if obj == nil {
				errs = append(errs, fmt.Errorf("volume %q: Secret %q is not in the manifests", v.Name, name))
				return
			}
			for _, it := range items {
				if !obj.hasKey(it.Key) {
					errs = append(errs, fmt.Errorf("volume %q: Secret %q has no key %q", v.Name, name, it.Key))
				}
			}
		}
		kinds := 0
		if v.EmptyDir != nil {
			kinds++
		}
		if v.ConfigMap != nil {
			kinds++
			checkCM(v.ConfigMap)
		}
		if v.Secret != nil {
			kinds++
			checkSecret(v.Secret.SecretName, v.Secret.Items)
		}
		if v.Projected != nil {
			kinds++
			for _, s := range v.Projected.Sources {
				if s.ConfigMap != nil {
					checkCM(s.ConfigMap)
				}
				if s.Secret != nil {
					checkSecret(s.Secret.Name, s.Secret.Items)
				}
			}
		}
		if kinds != 1 {
			errs = append(errs, fmt.Errorf("volume %q: want exactly one source, has %d", v.Name, kinds))
		}
	}
	for _, c := range p.allContainers() {
		for _, m := range c.VolumeMounts {
			if !names[m.Name] {
				errs = append(errs, fmt.Errorf("container %s: mount %s names volume %q, which the pod does not define", c.Name, m.MountPath, m.Name))
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				continue
			}
			if r := e.ValueFrom.SecretKeyRef; r != nil {
				if s := p.b.secrets[r.Name]; s == nil {
					errs = append(errs, fmt.Errorf("container %s: env %s: Secret %q is not in the manifests", c.Name, e.Name, r.Name))
				} else if !s.hasKey(r.Key) {
					errs = append(errs, fmt.Errorf("container %s: env %s: Secret %q has no key %q", c.Name, e.Name, r.Name, r.Key))
				}
			}
			if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
				if cm := p.b.configMaps[r.Name]; cm == nil {
					errs = append(errs, fmt.Errorf("container %s: env %s: ConfigMap %q is not in the manifests", c.Name, e.Name, r.Name))
				} else if _, ok := cm.Data[r.Key]; !ok {
					errs = append(errs, fmt.Errorf("container %s: env %s: ConfigMap %q has no key %q", c.Name, e.Name, r.Name, r.Key))
				}
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil && p.b.secrets[e.SecretRef.Name] == nil {
				errs = append(errs, fmt.Errorf("container %s: envFrom: Secret %q is not in the manifests", c.Name, e.SecretRef.Name))
			}
			if e.ConfigMapRef != nil && p.b.configMaps[e.ConfigMapRef.Name] == nil {
				errs = append(errs, fmt.Errorf("container %s: envFrom: ConfigMap %q is not in the manifests", c.Name, e.ConfigMapRef.Name))
			}
		}
	}
	sel := p.d.Spec.Selector.MatchLabels
	if len(sel) == 0 {
		errs = append(errs, errors.New("spec.selector.matchLabels is empty"))
	}
	for k, v := range sel {
		if p.d.Spec.Template.Metadata.Labels[k] != v {
			errs = append(errs, fmt.Errorf("selector %s=%s does not match the pod template's labels", k, v))
		}
	}
	return errs
}

// checkAllUsed: every ConfigMap and Secret the bundle creates is used by the
// Deployment, so a stale object (an old checksum ConfigMap left in a file)
// shows up.
func checkAllUsed(p *pod) []error {
	usedCM, usedSecret := map[string]bool{}, map[string]bool{}
	for _, v := range p.spec.Volumes {
		if v.ConfigMap != nil {
			usedCM[v.ConfigMap.Name] = true
		}
		if v.Secret != nil {
			usedSecret[v.Secret.SecretName] = true
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.ConfigMap != nil {
					usedCM[s.ConfigMap.Name] = true
				}
				if s.Secret != nil {
					usedSecret[s.Secret.Name] = true
				}
			}
		}
	}
	for _, c := range p.allContainers() {
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				usedSecret[e.ValueFrom.SecretKeyRef.Name] = true
			}
			if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
				usedCM[e.ValueFrom.ConfigMapKeyRef.Name] = true
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				usedSecret[e.SecretRef.Name] = true
			}
			if e.ConfigMapRef != nil {
				usedCM[e.ConfigMapRef.Name] = true
			}
		}
	}
	var errs []error
	for _, n := range sortedKeys(p.b.configMaps) {
		if !usedCM[n] {
			errs = append(errs, fmt.Errorf("ConfigMap %q is created but the Deployment does not use it", n))
		}
	}
	for _, n := range sortedKeys(p.b.secrets) {
		if !usedSecret[n] {
			errs = append(errs, fmt.Errorf("Secret %q is created but the Deployment does not use it", n))
		}
	}
	return errs
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// brokerConfig parses the secretless.yml the broker container reads (-f)
// with the broker's own parser.
func (p *pod) brokerConfig() (*config.Config, fileSource, error) {
	f, ok := p.flags["f"]
	if !ok {
		return nil, fileSource{}, errors.New("broker has no -f: it would search ./secretless.yml, ~/.secretless.yml, /etc/secretless.yml in the image")
	}
	src, err := p.fileIn(p.broker, f)
	if err != nil {
		return nil, src, err
	}
	if src.configMap == "" {
		return nil, src, fmt.Errorf("-f %s is not a ConfigMap key", f)
	}
	cfg, err := config.Parse(src.configMap+"/"+src.key, []byte(src.content), podProviders{providers.Default()})
	return cfg, src, err
}

// podProviders are the broker's providers without their load-time checks:
// the environment variables and files a credential names are the pod's,
// not this process's, and checkCredentialSources holds them against the
// manifests.
type podProviders struct{ providers.Registry }

func (podProviders) CheckID(string, string) error { return nil }

// credentialEnv sets, with placeholder values, the environment variables
// that cfg's env credentials name and that the broker container's env
// defines, as the pod would.
func (p *pod) credentialEnv(cfg *config.Config) []string {
	var out []string
	for _, s := range cfg.Services {
		for _, c := range s.Credentials {
			if _, ok := p.brokerEnv(c.Get); ok && c.From == "env" {
				out = append(out, c.Get+"=placeholder")
			}
		}
	}
	return out
}

func checkConfig(p *pod) []error {
	cfg, _, err := p.brokerConfig()
	if err != nil {
		return []error{err}
	}
	if len(cfg.Services) == 0 {
		return []error{errors.New("config has no services")}
	}
	return nil
}

func (p *pod) brokerEnv(name string) (*envVar, bool) {
	for i := range p.broker.Env {
		if p.broker.Env[i].Name == name {
			return &p.broker.Env[i], true
		}
	}
	return nil, false
}

func checkEnvCredentials(p *pod) []error {
	cfg, _, err := p.brokerConfig()
	if err != nil {
		return []error{err}
	}
	var errs []error
	n := 0
	for _, s := range cfg.Services {
		for _, c := range s.Credentials {
			if c.From != "env" {
				continue
			}
			n++
			e, ok := p.brokerEnv(c.Get)
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("service %s credential %s: env var %s is not set on container %s", s.Name, c.Name, c.Get, p.broker.Name))
			case e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil:
				errs = append(errs, fmt.Errorf("service %s credential %s: env var %s does not come from a Secret", s.Name, c.Name, c.Get))
			default:
				r := e.ValueFrom.SecretKeyRef
				if r.Optional != nil && *r.Optional {
					errs = append(errs, fmt.Errorf("env var %s: secretKeyRef is optional, so the credential could be missing at run time", c.Get))
				}
				if sec := p.b.secrets[r.Name]; sec == nil {
					errs = append(errs, fmt.Errorf("env var %s: Secret %q is not in the manifests", c.Get, r.Name))
				} else if !sec.hasKey(r.Key) {
					errs = append(errs, fmt.Errorf("env var %s: Secret %q has no key %q", c.Get, r.Name, r.Key))
				}
			}
		}
	}
	if n == 0 {
		errs = append(errs, errors.New("no credential uses from: env; the example is meant to show the Secret wiring"))
	}
	return errs
}

func (p *pod) checksumEntries() ([]plugins.Entry, fileSource, error) {
	s, ok := p.flags["s"]
	if !ok {
		return nil, fileSource{}, errors.New("broker has no -s: plugins would load unverified")
	}
	src, err := p.fileIn(p.broker, s)
	if err != nil {
		return nil, src, err
	}
	if src.configMap == "" {
		return nil, src, fmt.Errorf("-s %s does not come from a ConfigMap", s)
	}
	entries, err := plugins.ParseChecksums([]byte(src.content))
	if err != nil {
		return nil, src, fmt.Errorf("ConfigMap %s key %s: %w", src.configMap, src.key, err)
	}
	return entries, src, nil
}

func checkConnectors(p *pod) []error {
	cfg, _, err := p.brokerConfig()
	if err != nil {
		return []error{err}
	}
	entries, _, err := p.checksumEntries()
	if err != nil {
		return []error{err}
	}
	shipped := map[string]bool{}
	for _, e := range entries {
		shipped[e.Base] = true
	}
	var errs []error
	for _, s := range cfg.Services {
		if slices.Contains(broker.BuiltinIDs(), s.Connector) {
			continue
		}
		// Convention of deploy/build.sh and the examples: NAME.so has id NAME.
		if !shipped[s.Connector+".so"] {
			errs = append(errs, fmt.Errorf("service %s: connector %q is neither built in (%v) nor a plugin %s.so in the checksum file",
				s.Name, s.Connector, broker.BuiltinIDs(), s.Connector))
		}
	}
	return errs
}

// healthPort is the TCP port of the broker's -health-addr.
func (p *pod) healthPort() (string, int, error) {
	addr := p.flag("health-addr", defaultHealthAddr)
	host, port, err := splitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("-health-addr %q: %w", addr, err)
	}
	return host, port, nil
}

func splitHostPort(addr string) (string, int, error) {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return "", 0, errors.New("want HOST:PORT")
	}
	port, err := strconv.Atoi(addr[i+1:])
	if err != nil || port < 1 || port > 65535 {
		return "", 0, errors.New("bad port")
	}
	return strings.Trim(addr[:i], "[]"), port, nil
}

// wantProbePaths are the health endpoints each probe must use.
var wantProbePaths = map[string]string{"startupProbe": "/startup", "readinessProbe": "/ready", "livenessProbe": "/live"}

func checkProbes(p *pod) []error {
	host, port, err := p.healthPort()
	if err != nil {
		return []error{err}
	}
	var errs []error
	if host != "" && host != "0.0.0.0" && host != "::" {
		errs = append(errs, fmt.Errorf("-health-addr host %q: the kubelet probes the pod IP, so the health server must listen on all interfaces (\":%d\")", host, port))
	}
	declared := false
	for _, cp := range p.broker.Ports {
		if cp.ContainerPort == port {
			declared = true
		}
	}
	if !declared {
		errs = append(errs, fmt.Errorf("container %s does not declare the health port %d", p.broker.Name, port))
	}
	probes := map[string]*probe{"startupProbe": p.broker.StartupProbe, "readinessProbe": p.broker.ReadinessProbe, "livenessProbe": p.broker.LivenessProbe}
	for _, name := range sortedKeys(probes) {
		pr := probes[name]
		if pr == nil || pr.HTTPGet == nil {
			errs = append(errs, fmt.Errorf("container %s: no %s with httpGet", p.broker.Name, name))
			continue
		}
		if pr.HTTPGet.Path != wantProbePaths[name] {
			errs = append(errs, fmt.Errorf("%s: path %q, want %q", name, pr.HTTPGet.Path, wantProbePaths[name]))
		}
		if s := pr.HTTPGet.Scheme; s != "" && s != "HTTP" {
			errs = append(errs, fmt.Errorf("%s: scheme %q, but the health server speaks plain HTTP", name, s))
		}
		got := pr.HTTPGet.Port.Int
		if pr.HTTPGet.Port.IsStr {
			got = 0
			for _, cp := range p.broker.Ports {
				if cp.Name == pr.HTTPGet.Port.Str {
					got = cp.ContainerPort
				}
			}
			if got == 0 {
				errs = append(errs, fmt.Errorf("%s: port name %q is not a port of container %s", name, pr.HTTPGet.Port.Str, p.broker.Name))
				continue
			}
		}
		if got != port {
			errs = append(errs, fmt.Errorf("%s: port %d, but -health-addr is on port %d", name, got, port))
		}
	}
	if p.brokerInit && p.broker.StartupProbe == nil {
		errs = append(errs, errors.New("a native sidecar without startupProbe lets the application start before the listeners are open"))
	}
	return errs
}

// installer is the init container that fills the plugin directory: it runs
// "secretless-broker plugins verify -p DIR -s FILE" (in a shell or not).
type installer struct {
	c        *container
	index    int
	dir, sum string
}

var shellWord = regexp.MustCompile(`"[^"]*"|'[^']*'|\S+`)

func (p *pod) installers() ([]installer, []error) {
	var out []installer
	var errs []error
	for i := range p.spec.InitContainers {
		c := &p.spec.InitContainers[i]
		if p.brokerInit && i == p.brokerIndex {
			continue
		}
		var words []string
		for _, s := range append(slices.Clone(c.Command), c.Args...) {
			for _, w := range shellWord.FindAllString(s, -1) {
				words = append(words, strings.Trim(w, `"'`))
			}
		}
		for j := 0; j+2 < len(words); j++ {
			if !isBrokerBinary(words[j]) || words[j+1] != "plugins" || words[j+2] != "verify" {
				continue
			}
			var args []string
			for _, w := range words[j+3:] {
				if w == "&&" || w == ";" || w == "||" || w == "|" {
					break
				}
				args = append(args, w)
			}
			f, err := parseBrokerFlags(args)
			if err != nil {
				errs = append(errs, fmt.Errorf("init container %s: plugins verify: %w", c.Name, err))
				continue
			}
			out = append(out, installer{c: c, index: i, dir: f["p"], sum: f["s"]})
		}
	}
	return out, errs
}

func checkPluginDir(p *pod) []error {
	var errs []error
	dir := p.flag("p", defaultPluginDir)
	m, rel, ok := mountFor(p.broker, dir)
	if !ok || rel != "" || strings.TrimSuffix(m.MountPath, "/") != strings.TrimSuffix(dir, "/") {
		return []error{fmt.Errorf("-p %s is not the mount path of a volume in container %s", dir, p.broker.Name)}
	}
	v := p.volume(m.Name)
	if v == nil || v.EmptyDir == nil {
		return []error{fmt.Errorf("-p %s: volume %q is not an emptyDir", dir, m.Name)}
	}
	if !m.ReadOnly {
		errs = append(errs, fmt.Errorf("-p %s: the broker should mount the plugin directory read-only", dir))
	}
	inst, ierrs := p.installers()
	errs = append(errs, ierrs...)
	if len(inst) == 0 {
		return append(errs, errors.New("no init container runs \"secretless-broker plugins verify\" to fill and check the plugin directory"))
	}
	_, brokerSum, sumErr := p.checksumEntries()
	for _, in := range inst {
		if p.brokerInit && in.index > p.brokerIndex {
			errs = append(errs, fmt.Errorf("init container %s runs after the broker sidecar %s", in.c.Name, p.broker.Name))
		}
		if in.c.Image != p.broker.Image {
			errs = append(errs, fmt.Errorf("init container %s uses image %q, the broker %q: the plugins must come from the build that made the broker", in.c.Name, in.c.Image, p.broker.Image))
		}
		im, irel, ok := mountFor(in.c, in.dir)
		switch {
		case in.dir == "":
			errs = append(errs, fmt.Errorf("init container %s: plugins verify has no -p", in.c.Name))
		case !ok || irel != "" || im.Name != m.Name:
			errs = append(errs, fmt.Errorf("init container %s verifies -p %s, which is not where it mounts volume %q", in.c.Name, in.dir, m.Name))
		case im.ReadOnly:
			errs = append(errs, fmt.Errorf("init container %s mounts volume %q read-only, so it cannot install plugins", in.c.Name, m.Name))
		}
		src, err := p.fileIn(in.c, in.sum)
		switch {
		case in.sum == "":
			errs = append(errs, fmt.Errorf("init container %s: plugins verify has no -s", in.c.Name))
		case err != nil:
			errs = append(errs, err)
		case sumErr == nil && (src.configMap != brokerSum.configMap || src.key != brokerSum.key):
			errs = append(errs, fmt.Errorf("init container %s verifies against %s/%s, the broker against %s/%s", in.c.Name, src.configMap, src.key, brokerSum.configMap, brokerSum.key))
		}
	}
	return errs
}

func checkChecksumFile(p *pod) []error {
	entries, src, err := p.checksumEntries()
	if err != nil {
		return []error{err}
	}
	var errs []error
	if cm := p.b.configMaps[src.configMap]; cm.Immutable == nil || !*cm.Immutable {
		errs = append(errs, fmt.Errorf("ConfigMap %s should be immutable: a new plugin build gets a new ConfigMap, so that the change rolls out new pods", src.configMap))
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Base)
	}
	sort.Strings(got)
	want, err := shippedPlugins()
	if err != nil {
		return append(errs, err)
	}
	if !slices.Equal(got, want) {
		errs = append(errs, fmt.Errorf("ConfigMap %s lists %v, but the image ships %v (deploy/build.sh): every plugin in the directory must be listed", src.configMap, got, want))
	}
	return errs
}

// effective returns the container's value, else the pod's.
func effective[T any](c, pod *T) *T {
	if c != nil {
		return c
	}
	return pod
}

func checkNonRoot(p *pod) []error {
	var errs []error
	psc := p.spec.SecurityContext
	if psc == nil {
		psc = &podSecurityContext{}
	}
	for _, c := range p.allContainers() {
		sc := c.SecurityContext
		if sc == nil {
			sc = &securityContext{}
		}
		if v := effective(sc.RunAsNonRoot, psc.RunAsNonRoot); v == nil || !*v {
			errs = append(errs, fmt.Errorf("container %s: runAsNonRoot is not true", c.Name))
		}
		if v := effective(sc.RunAsUser, psc.RunAsUser); v == nil || *v == 0 {
			errs = append(errs, fmt.Errorf("container %s: runAsUser is not set to a non-zero uid", c.Name))
		}
		if v := sc.AllowPrivilegeEscalation; v == nil || *v {
			errs = append(errs, fmt.Errorf("container %s: allowPrivilegeEscalation is not false", c.Name))
		}
		if v := sc.Privileged; v != nil && *v {
			errs = append(errs, fmt.Errorf("container %s: privileged", c.Name))
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			errs = append(errs, fmt.Errorf("container %s: capabilities do not drop ALL", c.Name))
		}
	}
	var brokerUID *int64
	if p.broker.SecurityContext != nil {
		brokerUID = p.broker.SecurityContext.RunAsUser
	}
	if v := effective(brokerUID, psc.RunAsUser); v != nil && *v != imageUID {
		errs = append(errs, fmt.Errorf("broker runs as uid %d, the image's user is %d", *v, imageUID))
	}
	if v := p.spec.AutomountServiceAccountToken; v == nil || *v {
		errs = append(errs, errors.New("automountServiceAccountToken is not false: the broker needs no API access"))
	}
	return errs
}

func checkTmpDir(p *pod) []error {
	var errs []error
	for _, c := range p.allContainers() {
		if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			errs = append(errs, fmt.Errorf("container %s: readOnlyRootFilesystem is not true", c.Name))
		}
	}
	tmp := "/tmp" // os.TempDir without TMPDIR
	if e, ok := p.brokerEnv("TMPDIR"); ok {
		if e.ValueFrom != nil || !filepath.IsAbs(e.Value) {
			errs = append(errs, fmt.Errorf("TMPDIR %q: want a literal absolute path", e.Value))
		}
		tmp = e.Value
	}
	m, _, ok := mountFor(p.broker, tmp)
	switch {
	case !ok:
		errs = append(errs, fmt.Errorf("TMPDIR %s is on the read-only root file system: the broker cannot copy plugins there to load them", tmp))
	case m.ReadOnly:
		errs = append(errs, fmt.Errorf("TMPDIR %s: mount %s is read-only", tmp, m.MountPath))
	default:
		if v := p.volume(m.Name); v == nil || v.EmptyDir == nil {
			errs = append(errs, fmt.Errorf("TMPDIR %s: volume %q is not an emptyDir", tmp, m.Name))
		}
	}
	return errs
}

func checkSecretOnlyInBroker(p *pod) []error {
	var errs []error
	secretVolumes := map[string]bool{}
	for _, v := range p.spec.Volumes {
		if v.Secret != nil {
			secretVolumes[v.Name] = true
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.Secret != nil {
					secretVolumes[v.Name] = true
				}
			}
		}
	}
	for _, c := range p.allContainers() {
		if c == p.broker {
			continue
		}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				errs = append(errs, fmt.Errorf("container %s reads Secret %s (env %s): only the broker may hold credentials", c.Name, e.ValueFrom.SecretKeyRef.Name, e.Name))
			}
		}
		for _, e := range c.EnvFrom {
			if e.SecretRef != nil {
				errs = append(errs, fmt.Errorf("container %s reads Secret %s (envFrom): only the broker may hold credentials", c.Name, e.SecretRef.Name))
			}
		}
		for _, m := range c.VolumeMounts {
			if secretVolumes[m.Name] {
				errs = append(errs, fmt.Errorf("container %s mounts the Secret volume %s: only the broker may hold credentials", c.Name, m.Name))
			}
		}
	}
	return errs
}

func checkGracePeriod(p *pod) []error {
	grace := int64(30) // Kubernetes' default
	if v := p.spec.TerminationGracePeriodSeconds; v != nil {
		grace = *v
	}
	timeout := defaultShutdownTimeout
	if s, ok := p.flags["shutdown-timeout"]; ok {
		d, err := time.ParseDuration(s)
		if err != nil {
			return []error{fmt.Errorf("-shutdown-timeout %q: %w", s, err)}
		}
		timeout = d
	}
	if time.Duration(grace)*time.Second <= timeout {
		return []error{fmt.Errorf("terminationGracePeriodSeconds %d is not longer than -shutdown-timeout %s: the kubelet would kill the broker while it drains", grace, timeout)}
	}
	return nil
}

func checkListeners(p *pod) []error {
	cfg, _, err := p.brokerConfig()
	if err != nil {
		return []error{err}
	}
	var errs []error
	for _, s := range cfg.Services {
		switch s.ListenOn.Network {
		case "tcp":
			host, _, err := splitHostPort(s.ListenOn.Address)
			if err != nil || (host != "127.0.0.1" && host != "::1" && host != "localhost") {
				errs = append(errs, fmt.Errorf("service %s listens on %s: a sidecar should listen on loopback only", s.Name, s.ListenOn))
			}
		case "unix":
			dir := path.Dir(s.ListenOn.Address)
			m, rel, ok := mountFor(p.broker, dir)
			if !ok || rel != "" {
				errs = append(errs, fmt.Errorf("service %s: socket directory %s is not a volume mount of the broker", s.Name, dir))
				continue
			}
			v := p.volume(m.Name)
			if v == nil || v.EmptyDir == nil || m.ReadOnly {
				errs = append(errs, fmt.Errorf("service %s: socket directory %s must be a writable emptyDir", s.Name, dir))
				continue
			}
			shared := false
			for i := range p.spec.Containers {
				c := &p.spec.Containers[i]
				if c == p.broker {
					continue
				}
				if am, arel, ok := mountFor(c, dir); ok && arel == "" && am.Name == m.Name {
					shared = true
				}
			}
			if !shared {
				errs = append(errs, fmt.Errorf("service %s: no application container mounts the socket volume %q at %s", s.Name, m.Name, dir))
			}
			others := s.SocketMode&0o006 != 0
			fsGroup := p.spec.SecurityContext != nil && p.spec.SecurityContext.FSGroup != nil
			if !others && !fsGroup {
				errs = append(errs, fmt.Errorf("service %s: socket mode %04o lets only the owner and group connect, but the pod sets no fsGroup to share a group", s.Name, s.SocketMode))
			}
		}
	}
	return errs
}

func TestKubernetesManifests(t *testing.T) {
	for _, variant := range variantFiles(t) {
		b, err := loadBundle(variant)
		if err != nil {
			t.Errorf("%s: %v", variant, err)
			continue
		}
		p, err := newPod(b, b.deployments[0])
		if err != nil {
			t.Errorf("%s: %v", variant, err)
			continue
		}
		for _, c := range podChecks {
			t.Run(b.name+"/"+c.name, func(t *testing.T) {
				for _, err := range c.check(p) {
					t.Error(err)
				}
			})
		}
	}
}

// TestKubernetesChecksCatchMistakes breaks a good bundle in one way at a time
// and expects the named check to notice: the checks above can fail.
func TestKubernetesChecksCatchMistakes(t *testing.T) {
	variants := variantFiles(t)
	unixVariant := ""
	for _, v := range variants {
		if strings.Contains(v, "unix") {
			unixVariant = v
		}
	}
	if unixVariant == "" {
		t.Fatal("no unix-socket variant")
	}
	cases := []struct {
		name    string
		variant string
		check   string
		breakIt func(p *pod)
	}{
		{"missing Secret key", variants[0], "references exist", func(p *pod) {
			for _, s := range p.b.secrets {
				s.StringData = nil
				s.Data = nil
			}
		}},
		{"missing checksum ConfigMap", variants[0], "references exist", func(p *pod) {
			for n := range p.b.configMaps {
				if strings.Contains(n, "checksum") {
					delete(p.b.configMaps, n)
				}
			}
		}},
		{"mount of an undefined volume", variants[0], "references exist", func(p *pod) {
			p.broker.VolumeMounts = append(p.broker.VolumeMounts, volumeMount{Name: "nope", MountPath: "/nope"})
		}},
		{"unused ConfigMap", variants[0], "every object is used", func(p *pod) {
			p.b.configMaps["left-over"] = &configMap{Data: map[string]string{"a": "b"}}
		}},
		{"config version 1", variants[0], "config parses as version 2", func(p *pod) {
			for _, cm := range p.b.configMaps {
				if s, ok := cm.Data["secretless.yml"]; ok {
					cm.Data["secretless.yml"] = strings.Replace(s, "version: 2", "version: 1", 1)
				}
			}
		}},
		{"-f from the image", variants[0], "config parses as version 2", func(p *pod) { p.flags["f"] = "/etc/secretless.yml" }},
		{"env credential not set", variants[0], "env credentials come from the Secret", func(p *pod) {
			p.broker.Env = slices.DeleteFunc(p.broker.Env, func(e envVar) bool { return e.Name == "PG_PASSWORD" })
		}},
		{"env credential as a literal value", variants[0], "env credentials come from the Secret", func(p *pod) {
			e, _ := p.brokerEnv("PG_PASSWORD")
			e.ValueFrom, e.Value = nil, "hunter2"
		}},
		{"unknown connector", variants[0], "connectors are built in or shipped", func(p *pod) {
			for _, cm := range p.b.configMaps {
				if s, ok := cm.Data["secretless.yml"]; ok {
					cm.Data["secretless.yml"] = strings.Replace(s, "connector: redis", "connector: memcached", 1)
				}
			}
		}},
		{"liveness on /ready", variants[0], "probes hit the health port and paths", func(p *pod) { p.broker.LivenessProbe.HTTPGet.Path = "/ready" }},
		{"probe on another port", variants[0], "probes hit the health port and paths", func(p *pod) {
			p.broker.ReadinessProbe.HTTPGet.Port = intOrString{Int: 8080, Loaded: true}
		}},
		{"health on loopback", variants[0], "probes hit the health port and paths", func(p *pod) { p.flags["health-addr"] = "127.0.0.1:5335" }},
		{"-p elsewhere", variants[0], "plugin dir is the verified emptyDir", func(p *pod) { p.flags["p"] = "/opt/plugins" }},
		{"no installer", variants[0], "plugin dir is the verified emptyDir", func(p *pod) {
			p.spec.InitContainers = slices.Delete(p.spec.InitContainers, 0, 1)
			p.brokerIndex = 0
			p.broker = &p.spec.InitContainers[0]
		}},
		{"installer from another image", variants[0], "plugin dir is the verified emptyDir", func(p *pod) {
			p.spec.InitContainers[0].Image = "example.com/other:1"
		}},
		{"checksum from the image", variants[0], "checksum file comes from an immutable ConfigMap", func(p *pod) {
			p.flags["s"] = "/usr/share/PLUGINS_SHA256SUM.txt"
		}},
		{"mutable checksum ConfigMap", variants[0], "checksum file comes from an immutable ConfigMap", func(p *pod) {
			for n, cm := range p.b.configMaps {
				if strings.Contains(n, "checksum") {
					cm.Immutable = nil
				}
			}
		}},
		{"checksum lists a plugin the image lacks", variants[0], "checksum file comes from an immutable ConfigMap", func(p *pod) {
			for n, cm := range p.b.configMaps {
				if strings.Contains(n, "checksum") {
					for k, v := range cm.Data {
						cm.Data[k] = v + strings.Repeat("1", 64) + "  extra.so\n"
					}
				}
			}
		}},
		{"root uid", variants[0], "containers run as non-root", func(p *pod) {
			zero := int64(0)
			p.spec.Containers[0].SecurityContext.RunAsUser = &zero
		}},
		{"writable root", variants[0], "read-only root with an exec-able TMPDIR", func(p *pod) {
			f := false
			p.broker.SecurityContext.ReadOnlyRootFilesystem = &f
		}},
		{"TMPDIR on the root file system", variants[0], "read-only root with an exec-able TMPDIR", func(p *pod) {
			e, _ := p.brokerEnv("TMPDIR")
			e.Value = "/var/tmp"
		}},
		{"app reads the Secret", variants[0], "only the broker sees the Secret", func(p *pod) {
			e, _ := p.brokerEnv("PG_PASSWORD")
			p.spec.Containers[0].Env = append(p.spec.Containers[0].Env, *e)
		}},
		{"grace period too short", variants[0], "grace period covers the shutdown timeout", func(p *pod) {
			v := int64(30)
			p.spec.TerminationGracePeriodSeconds = &v
		}},
		{"listen on all interfaces", variants[0], "listeners stay inside the pod", func(p *pod) {
			for _, cm := range p.b.configMaps {
				if s, ok := cm.Data["secretless.yml"]; ok {
					cm.Data["secretless.yml"] = strings.Replace(s, "tcp://127.0.0.1:", "tcp://0.0.0.0:", 1)
				}
			}
		}},
		{"socket volume not shared", unixVariant, "listeners stay inside the pod", func(p *pod) {
			p.spec.Containers[0].VolumeMounts = nil
		}},
		{"no fsGroup for 0660 sockets", unixVariant, "listeners stay inside the pod", func(p *pod) {
			p.spec.SecurityContext.FSGroup = nil
		}},
	}
	checks := map[string]func(*pod) []error{}
	for _, c := range podChecks {
		checks[c.name] = c.check
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			check := checks[tc.check]
			if check == nil {
				t.Fatalf("no check named %q", tc.check)
			}
			b, err := loadBundle(tc.variant)
			if err != nil {
				t.Fatal(err)
			}
			p, err := newPod(b, b.deployments[0])
			if err != nil {
				t.Fatal(err)
			}
			if errs := check(p); len(errs) != 0 {
				t.Fatalf("check %q fails on the unbroken manifests: %v", tc.check, errs)
			}
			tc.breakIt(p)
			errs := check(p)
			if len(errs) == 0 {
				t.Fatalf("check %q did not notice", tc.check)
			}
			t.Logf("noticed: %v", errors.Join(errs...))
		})
	}
}

func TestManifestDecodingIsStrict(t *testing.T) {
	cases := []struct{ name, doc string }{
		{"misspelt field", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndatta: {a: b}\n"},
		{"unknown kind", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n"},
		{"field of another kind", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nstringData: {a: b}\n"},
		{"second document misspelt", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: y}\nstringdata: {a: b}\n"},
		{"no name", "apiVersion: v1\nkind: ConfigMap\ndata: {a: b}\n"},
		{"probe field in the wrong place", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers:\n      - name: a\n        httpGet: {path: /live}\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := &bundle{configMaps: map[string]*configMap{}, secrets: map[string]*secret{}}
			if err := b.addManifests("test.yaml", []byte(tc.doc)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestProbePathsAreServed asks the broker's health server for each probe's
// path: before start-up the startup and readiness paths say 503, after it
// every path says 200. A path the server does not have would say 404.
func TestProbePathsAreServed(t *testing.T) {
	s, err := health.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve() }()
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	get := func(p string) int {
		t.Helper()
		resp, err := http.Get("http://" + s.Addr().String() + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	before := map[string]int{"/startup": 503, "/ready": 503, "/live": 200}
	for _, probe := range sortedKeys(wantProbePaths) {
		p := wantProbePaths[probe]
		t.Run(probe+" before start-up", func(t *testing.T) {
			if got := get(p); got != before[p] {
				t.Errorf("GET %s: %d, want %d", p, got, before[p])
			}
		})
	}
	s.SetStarted()
	s.SetReady(true)
	for _, probe := range sortedKeys(wantProbePaths) {
		p := wantProbePaths[probe]
		t.Run(probe+" after start-up", func(t *testing.T) {
			if got := get(p); got != 200 {
				t.Errorf("GET %s: %d, want 200", p, got)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// deploy/build.sh: the one place the broker and plugins are built.

type goBuild struct {
	line  int
	words []string // after "go build"
}

// goBuilds returns the "go build" command lines of a shell script.
func goBuilds(script string) []goBuild {
	var out []goBuild
	for i, l := range strings.Split(script, "\n") {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "go build ") {
			continue
		}
		var words []string
		for _, w := range shellWord.FindAllString(l, -1)[2:] {
			words = append(words, strings.ReplaceAll(strings.ReplaceAll(w, `"`, ""), `'`, ""))
		}
		out = append(out, goBuild{line: i + 1, words: words})
	}
	return out
}

// flagsOf drops -buildmode=plugin, -o and the package from a go build line.
func flagsOf(words []string) (flags []string, pkg string, plugin bool) {
	if len(words) == 0 {
		return nil, "", false
	}
	pkg = words[len(words)-1]
	for i := 0; i < len(words)-1; i++ {
		w := words[i]
		switch {
		case w == "-buildmode=plugin":
			plugin = true
		case w == "-buildmode" && i+1 < len(words)-1 && words[i+1] == "plugin":
			plugin = true
			i++
		case w == "-o":
			i++
		case strings.HasPrefix(w, "-o="):
		default:
			flags = append(flags, w)
		}
	}
	return flags, pkg, plugin
}

var pluginPkgsDefault = regexp.MustCompile(`\$\{PLUGIN_PKGS:-([^}]*)\}`)

// shippedPlugins lists the plugin files deploy/build.sh builds by default.
func shippedPlugins() ([]string, error) {
	data, err := os.ReadFile(buildScriptPath)
	if err != nil {
		return nil, err
	}
	m := pluginPkgsDefault.FindSubmatch(data)
	if m == nil {
		return nil, fmt.Errorf("%s: no ${PLUGIN_PKGS:-...} default", buildScriptPath)
	}
	var out []string
	for _, pkg := range strings.Fields(string(m[1])) {
		out = append(out, path.Base(pkg)+".so")
	}
	sort.Strings(out)
	return out, nil
}

func checkBuildScript(script string) []error {
	var errs []error
	if strings.Contains(script, "CGO_ENABLED=0") {
		errs = append(errs, errors.New("disables cgo: plugins cannot be built or loaded without it"))
	}
	if !regexp.MustCompile(`(?m)^export CGO_ENABLED=1$`).MatchString(script) {
		errs = append(errs, errors.New("does not export CGO_ENABLED=1"))
	}
	var brokerFlags []string
	var pluginLines []goBuild
	found := false
	for _, gb := range goBuilds(script) {
		flags, pkg, plugin := flagsOf(gb.words)
		for _, f := range flags {
			if strings.Contains(f, "static") || strings.Contains(f, "linkmode=internal") {
				errs = append(errs, fmt.Errorf("line %d: %q would make a binary that cannot load plugins", gb.line, f))
			}
		}
		switch {
		case plugin:
			pluginLines = append(pluginLines, gb)
		case pkg == "./cmd/secretless-broker":
			if found {
				errs = append(errs, fmt.Errorf("line %d: builds the broker twice", gb.line))
			}
			found, brokerFlags = true, flags
		default:
			errs = append(errs, fmt.Errorf("line %d: go build of %s is neither the broker nor a plugin", gb.line, pkg))
		}
	}
	if !found {
		return append(errs, errors.New("no go build of ./cmd/secretless-broker"))
	}
	if len(pluginLines) == 0 {
		return append(errs, errors.New("no go build -buildmode=plugin"))
	}
	for _, gb := range pluginLines {
		flags, _, _ := flagsOf(gb.words)
		if !slices.Equal(flags, brokerFlags) {
			errs = append(errs, fmt.Errorf("line %d: plugin flags %q differ from the broker's %q", gb.line, flags, brokerFlags))
		}
	}
	if !regexp.MustCompile(`sha256sum[^\n]*\*\.so\)? *>"?\$out/PLUGINS_SHA256SUM\.txt`).MatchString(script) {
		errs = append(errs, errors.New("does not write $out/PLUGINS_SHA256SUM.txt with sha256sum"))
	}
	return errs
}

func TestBuildScript(t *testing.T) {
	data, err := os.ReadFile(buildScriptPath)
	if err != nil {
		t.Fatal(err)
	}
	script := string(data)
	t.Run("same flags for broker and plugins, cgo on", func(t *testing.T) {
		for _, err := range checkBuildScript(script) {
			t.Error(err)
		}
	})
	t.Run("builds the example plugins", func(t *testing.T) {
		got, err := shippedPlugins()
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"bearer.so", "redis.so"} {
			if !slices.Contains(got, want) {
				t.Errorf("default PLUGIN_PKGS builds %v, not %s", got, want)
			}
		}
		m := pluginPkgsDefault.FindStringSubmatch(script)
		for _, pkg := range strings.Fields(m[1]) {
			if _, err := os.Stat(filepath.Join(repoRoot, pkg, "main.go")); err != nil {
				t.Errorf("plugin package %s: %v", pkg, err)
			}
		}
	})
	breaks := []struct{ name, from, to string }{
		{"trimpath on the plugins only", `-ldflags="$ldflags" -buildmode=plugin`, `-ldflags="$ldflags" -trimpath -buildmode=plugin`},
		{"race on the broker only", `-o "$out/secretless-broker"`, `-race -o "$out/secretless-broker"`},
		{"cgo off", "export CGO_ENABLED=1", "export CGO_ENABLED=0"},
		{"static broker", `-ldflags="$ldflags" -o "$out/secretless-broker"`, `-ldflags="$ldflags -extldflags=-static" -o "$out/secretless-broker"`},
		{"no checksum file", `sha256sum -- *.so`, `ls`},
		{"no plugin build", `-ldflags="$ldflags" -buildmode=plugin`, `-ldflags="$ldflags"`},
	}
	for _, tc := range breaks {
		t.Run("notices "+tc.name, func(t *testing.T) {
			if n := strings.Count(script, tc.from); n != 1 {
				t.Fatalf("%q occurs %d times in %s, want once", tc.from, n, buildScriptPath)
			}
			broken := strings.Replace(script, tc.from, tc.to, 1)
			if errs := checkBuildScript(broken); len(errs) == 0 {
				t.Error("not noticed")
			}
		})
	}
}

// ---------------------------------------------------------------------------
// Dockerfile, statically: Docker cannot run here.

type instruction struct {
	line int
	cmd  string // upper case
	rest string
}

type stage struct {
	image, name string
	ins         []instruction
}

// parseDockerfile splits a Dockerfile into stages of instructions, joining
// continuation lines and dropping comments.
func parseDockerfile(src string) ([]stage, error) {
	var stages []stage
	var cur strings.Builder
	start := 0
	flush := func() error {
		s := strings.TrimSpace(cur.String())
		cur.Reset()
		if s == "" {
			return nil
		}
		cmd, rest, _ := strings.Cut(s, " ")
		in := instruction{line: start, cmd: strings.ToUpper(cmd), rest: strings.TrimSpace(rest)}
		if in.cmd == "FROM" {
			f := strings.Fields(in.rest)
			st := stage{}
			for i := 0; i < len(f); i++ {
				switch {
				case strings.HasPrefix(f[i], "--"):
				case strings.EqualFold(f[i], "AS") && i+1 < len(f):
					st.name = f[i+1]
					i++
				case st.image == "":
					st.image = f[i]
				}
			}
			stages = append(stages, st)
		}
		if len(stages) == 0 {
			if in.cmd == "ARG" {
				return nil
			}
			return fmt.Errorf("line %d: %s before the first FROM", in.line, in.cmd)
		}
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
		return nil
	}
	for i, l := range strings.Split(src, "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "#") {
			continue
		}
		if cur.Len() == 0 {
			if t == "" {
				continue
			}
			start = i + 1
		}
		if strings.HasSuffix(t, `\`) {
			cur.WriteString(strings.TrimSuffix(t, `\`) + " ")
			continue
		}
		cur.WriteString(t)
		if err := flush(); err != nil {
			return nil, err
		}
	}
	if cur.Len() > 0 {
		return nil, errors.New("the last instruction ends in a line continuation")
	}
	return stages, nil
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.ins {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

func execForm(rest string) ([]string, error) {
	var v []string
	if err := yaml.Unmarshal([]byte(rest), &v); err != nil || !strings.HasPrefix(rest, "[") {
		return nil, fmt.Errorf("not exec (JSON) form: %s", rest)
	}
	return v, nil
}

var debianRelease = regexp.MustCompile(`^(?:docker\.io/(?:library/)?)?(?:golang:[0-9.]+-|debian:)(bookworm|trixie|bullseye)(?:-slim)?$`)

// copyDest returns the destination of "COPY --from=STAGE SRC DEST" for SRC.
func copyDest(st stage, from, src string) (string, bool) {
	for _, in := range st.all("COPY") {
		f := strings.Fields(in.rest)
		if !slices.Contains(f, "--from="+from) {
			continue
		}
		var args []string
		for _, w := range f {
			if !strings.HasPrefix(w, "--") {
				args = append(args, w)
			}
		}
		if len(args) >= 2 && slices.Contains(args[:len(args)-1], src) {
			return args[len(args)-1], true
		}
	}
	return "", false
}

type dockerCheck struct {
	name  string
	check func(stages []stage, mod goMod) []error
}

var dockerChecks = []dockerCheck{
	{"multi-stage", func(stages []stage, _ goMod) []error {
		if len(stages) < 2 {
			return []error{fmt.Errorf("%d stage(s): want a build stage and a runtime stage", len(stages))}
		}
		b := stages[0]
		if b.name == "" {
			return []error{errors.New("the build stage has no name (FROM ... AS build)")}
		}
		final := stages[len(stages)-1]
		if _, ok := copyDest(final, b.name, "/out/secretless-broker"); !ok {
			return []error{fmt.Errorf("the runtime stage does not COPY --from=%s the broker", b.name)}
		}
		return nil
	}},
	{"build stage is golang on Debian with the module's Go", func(stages []stage, mod goMod) []error {
		b := stages[0]
		goVersion := mod.goVersion
		var errs []error
		if !strings.HasPrefix(b.image, "golang:"+goVersion+"-") || !debianRelease.MatchString(b.image) {
			errs = append(errs, fmt.Errorf("build stage FROM %s: want golang:%s-<debian release> (go.mod says go %s; cgo needs gcc and glibc)", b.image, goVersion, goVersion))
		}
		cgo := false
		for _, in := range b.all("ENV") {
			if regexp.MustCompile(`\bCGO_ENABLED=1\b`).MatchString(in.rest) {
				cgo = true
			}
		}
		if !cgo {
			errs = append(errs, errors.New("build stage does not set ENV CGO_ENABLED=1"))
		}
		ran := false
		for _, in := range b.all("RUN") {
			if strings.Contains(in.rest, "deploy/build.sh /out") {
				ran = true
			}
		}
		if !ran {
			errs = append(errs, errors.New("build stage does not RUN deploy/build.sh /out"))
		}
		// "go mod download" runs before the whole checkout is copied: every
		// module that go.mod replaces with a local directory must be there.
		copied := map[string]bool{}
		for _, in := range b.ins {
			if in.cmd == "RUN" && strings.Contains(in.rest, "go mod download") {
				break
			}
			if in.cmd == "COPY" {
				for _, w := range strings.Fields(in.rest) {
					copied[path.Clean(w)] = true
				}
			}
		}
		for _, dir := range mod.localReplaces {
			if !copied[path.Join(dir, "go.mod")] {
				errs = append(errs, fmt.Errorf("go.mod replaces a module with ./%s, but %s/go.mod is not copied before go mod download", dir, dir))
			}
		}
		return errs
	}},
	{"cgo is never disabled", func(stages []stage, _ goMod) []error {
		var errs []error
		for _, st := range stages {
			for _, in := range st.ins {
				if strings.Contains(in.rest, "CGO_ENABLED=0") {
					errs = append(errs, fmt.Errorf("line %d: CGO_ENABLED=0: plugins need a cgo broker", in.line))
				}
			}
		}
		return errs
	}},
	{"runtime base is glibc, same Debian release", func(stages []stage, _ goMod) []error {
		final := stages[len(stages)-1]
		img := strings.ToLower(final.image)
		for _, bad := range []string{"scratch", "alpine", "static", "distroless", "busybox", "musl"} {
			if strings.Contains(img, bad) {
				return []error{fmt.Errorf("runtime FROM %s: a %s base cannot load Go plugins (they need glibc and the dynamic loader)", final.image, bad)}
			}
		}
		rm := debianRelease.FindStringSubmatch(final.image)
		bm := debianRelease.FindStringSubmatch(stages[0].image)
		if rm == nil || !strings.HasPrefix(final.image, "debian:") {
			return []error{fmt.Errorf("runtime FROM %s: want debian:<release>-slim", final.image)}
		}
		if bm == nil || bm[1] != rm[1] {
			return []error{fmt.Errorf("runtime %s and build %s are different Debian releases: the broker would run on another glibc than it was linked with", final.image, stages[0].image)}
		}
		return nil
	}},
	{"runs as non-root uid 10001", func(stages []stage, _ goMod) []error {
		final := stages[len(stages)-1]
		users := final.all("USER")
		if len(users) == 0 {
			return []error{errors.New("no USER: the broker would run as root")}
		}
		u := users[len(users)-1].rest
		uid, _, _ := strings.Cut(u, ":")
		if uid != strconv.Itoa(imageUID) {
			return []error{fmt.Errorf("USER %s: want the numeric uid %d (Kubernetes' runAsNonRoot can only check a numeric user)", u, imageUID)}
		}
		created := false
		for _, in := range final.all("RUN") {
			if regexp.MustCompile(`useradd [^&]*--uid ` + uid + `\b`).MatchString(in.rest) {
				created = true
			}
		}
		if !created {
			return []error{fmt.Errorf("no useradd --uid %s in the runtime stage", uid)}
		}
		return nil
	}},
	{"plugins and checksum file where ENTRYPOINT looks", func(stages []stage, _ goMod) []error {
		final := stages[len(stages)-1]
		b := stages[0].name
		var errs []error
		eps := final.all("ENTRYPOINT")
		if len(eps) == 0 {
			return []error{errors.New("no ENTRYPOINT")}
		}
		ep, err := execForm(eps[len(eps)-1].rest)
		if err != nil {
			return []error{fmt.Errorf("ENTRYPOINT: %w", err)}
		}
		if len(ep) == 0 || ep[0] != "/usr/local/bin/secretless-broker" {
			return []error{fmt.Errorf("ENTRYPOINT %q does not run /usr/local/bin/secretless-broker", ep)}
		}
		flags, err := parseBrokerFlags(ep[1:])
		if err != nil {
			return []error{fmt.Errorf("ENTRYPOINT: %w", err)}
		}
		if flags["p"] != imagePluginDir {
			errs = append(errs, fmt.Errorf("ENTRYPOINT -p %q, want %s", flags["p"], imagePluginDir))
		}
		if flags["s"] != imageSumFile {
			errs = append(errs, fmt.Errorf("ENTRYPOINT -s %q, want %s", flags["s"], imageSumFile))
		}
		if d, ok := copyDest(final, b, "/out/plugins/"); !ok || strings.TrimSuffix(d, "/") != flags["p"] {
			errs = append(errs, fmt.Errorf("the built plugins (/out/plugins/) are copied to %q, not to the -p directory %q", d, flags["p"]))
		}
		if d, ok := copyDest(final, b, "/out/PLUGINS_SHA256SUM.txt"); !ok || d != flags["s"] {
			errs = append(errs, fmt.Errorf("the checksum file is copied to %q, not to the -s file %q", d, flags["s"]))
		}
		if d, ok := copyDest(final, b, "/out/secretless-broker"); !ok || (d != ep[0] && d != path.Dir(ep[0])+"/") {
			errs = append(errs, fmt.Errorf("the broker is copied to %q, not to %q", d, ep[0]))
		}
		return errs
	}},
	{"TMPDIR is set", func(stages []stage, _ goMod) []error {
		for _, in := range stages[len(stages)-1].all("ENV") {
			if strings.HasPrefix(in.rest, "TMPDIR=/") {
				return nil
			}
		}
		return []error{errors.New("runtime stage does not set ENV TMPDIR (where plugins are copied before loading)")}
	}},
	{"HEALTHCHECK asks the health port", func(stages []stage, _ goMod) []error {
		final := stages[len(stages)-1]
		hc := final.all("HEALTHCHECK")
		if len(hc) == 0 {
			return []error{errors.New("no HEALTHCHECK")}
		}
		_, cmd, ok := strings.Cut(hc[len(hc)-1].rest, "CMD ")
		if !ok {
			return []error{errors.New("HEALTHCHECK without CMD")}
		}
		argv, err := execForm(strings.TrimSpace(cmd))
		if err != nil {
			return []error{fmt.Errorf("HEALTHCHECK: %w", err)}
		}
		if argv[0] != "/usr/local/bin/secretless-healthcheck" {
			return []error{fmt.Errorf("HEALTHCHECK runs %s, not the installed secretless-healthcheck", argv[0])}
		}
		if _, ok := copyDest(final, stages[0].name, "/out/secretless-healthcheck"); !ok {
			return []error{errors.New("secretless-healthcheck is not copied into the runtime stage")}
		}
		var errs []error
		exposed := ""
		for _, in := range final.all("EXPOSE") {
			exposed += " " + in.rest
		}
		addr := ""
		for _, in := range final.all("ENV") {
			if v, ok := strings.CutPrefix(in.rest, "SECRETLESS_HEALTH_ADDR="); ok {
				addr = v
			}
		}
		_, port, err := splitHostPort(addr)
		_, defPort, _ := splitHostPort(defaultHealthAddr)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("ENV SECRETLESS_HEALTH_ADDR %q: %v", addr, err))
		case port != defPort:
			errs = append(errs, fmt.Errorf("HEALTHCHECK asks port %d, the broker's default -health-addr is %s", port, defaultHealthAddr))
		case !slices.Contains(strings.Fields(exposed), strconv.Itoa(port)):
			errs = append(errs, fmt.Errorf("health port %d is not EXPOSEd", port))
		}
		return errs
	}},
}

// goMod is what the Dockerfile checks need from go.mod.
type goMod struct {
	goVersion     string   // of the go directive, such as 1.26
	localReplaces []string // directories that replace modules
}

func readGoMod(t *testing.T) goMod {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(data)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	mod := goMod{goVersion: string(m[1])}
	for _, r := range regexp.MustCompile(`(?m)=>\s*\./(\S+)\s*$`).FindAllSubmatch(data, -1) {
		mod.localReplaces = append(mod.localReplaces, path.Clean(string(r[1])))
	}
	return mod
}

func runDockerChecks(src string, mod goMod) (map[string][]error, error) {
	stages, err := parseDockerfile(src)
	if err != nil {
		return nil, err
	}
	if len(stages) == 0 {
		return nil, errors.New("no FROM")
	}
	out := map[string][]error{}
	for _, c := range dockerChecks {
		out[c.name] = c.check(stages, mod)
	}
	return out, nil
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatal(err)
	}
	mod := readGoMod(t)
	results, err := runDockerChecks(string(data), mod)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range dockerChecks {
		t.Run(c.name, func(t *testing.T) {
			for _, err := range results[c.name] {
				t.Error(err)
			}
		})
	}
	breaks := []struct{ name, check, from, to string }{
		{"single stage", "multi-stage", "FROM debian:bookworm-slim\n", ""},
		{"distroless static runtime", "runtime base is glibc, same Debian release", "FROM debian:bookworm-slim", "FROM gcr.io/distroless/static-debian12"},
		{"alpine runtime", "runtime base is glibc, same Debian release", "FROM debian:bookworm-slim", "FROM alpine:3.20"},
		{"other Debian release", "runtime base is glibc, same Debian release", "FROM debian:bookworm-slim", "FROM debian:trixie-slim"},
		{"cgo disabled", "cgo is never disabled", "ENV CGO_ENABLED=1", "ENV CGO_ENABLED=0"},
		{"root user", "runs as non-root uid 10001", "USER 10001:10001", "USER root"},
		{"plugins elsewhere", "plugins and checksum file where ENTRYPOINT looks", "/out/plugins/ /usr/local/lib/secretless/", "/out/plugins/ /opt/plugins/"},
		{"no -s", "plugins and checksum file where ENTRYPOINT looks", `, "-s", "/etc/secretless/PLUGINS_SHA256SUM.txt"`, ""},
		{"no TMPDIR", "TMPDIR is set", "ENV TMPDIR=/tmp", ""},
		{"old Go", "build stage is golang on Debian with the module's Go", "FROM golang:" + mod.goVersion + "-bookworm", "FROM golang:1.20-bookworm"},
		{"module replaced from a directory not copied", "build stage is golang on Debian with the module's Go", "COPY sdk/go.mod sdk/\n", ""},
		{"no HEALTHCHECK", "HEALTHCHECK asks the health port", "\nHEALTHCHECK ", "\n# HEALTHCHECK "},
	}
	for _, tc := range breaks {
		t.Run("notices "+tc.name, func(t *testing.T) {
			if n := strings.Count(string(data), tc.from); n != 1 {
				t.Fatalf("%q occurs %d times in %s, want once", tc.from, n, dockerfilePath)
			}
			broken := strings.Replace(string(data), tc.from, tc.to, 1)
			if len(results[tc.check]) != 0 {
				t.Fatalf("check %q fails on the unbroken Dockerfile", tc.check)
			}
			res, err := runDockerChecks(broken, mod)
			if err == nil && len(res[tc.check]) == 0 {
				t.Errorf("check %q did not notice", tc.check)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// systemd unit.

type unitFile map[string]map[string][]string

// parseUnit reads systemd's INI dialect: [Section], Key=Value, # and ;
// comments, a trailing backslash continues a line. Keys may repeat.
func parseUnit(src string) (unitFile, error) {
	u := unitFile{}
	section := ""
	lines := strings.Split(src, "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		n := i + 1
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		for strings.HasSuffix(l, `\`) && i+1 < len(lines) {
			i++
			l = strings.TrimSuffix(l, `\`) + " " + strings.TrimSpace(lines[i])
		}
		if strings.HasPrefix(l, "[") {
			if !strings.HasSuffix(l, "]") {
				return nil, fmt.Errorf("line %d: bad section header %q", n, l)
			}
			section = l[1 : len(l)-1]
			if u[section] != nil {
				return nil, fmt.Errorf("line %d: section [%s] twice", n, section)
			}
			u[section] = map[string][]string{}
			continue
		}
		if section == "" {
			return nil, fmt.Errorf("line %d: key outside a section", n)
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("line %d: want Key=Value, got %q", n, l)
		}
		k = strings.TrimSpace(k)
		u[section][k] = append(u[section][k], strings.TrimSpace(v))
	}
	return u, nil
}

func (u unitFile) get(section, key string) (string, bool) {
	v := u[section][key]
	if len(v) == 0 {
		return "", false
	}
	return v[len(v)-1], true
}

// values returns all space-separated values of a list setting (an empty
// assignment resets the list, as in systemd).
func (u unitFile) values(section, key string) []string {
	var out []string
	for _, v := range u[section][key] {
		if v == "" {
			out = nil
			continue
		}
		out = append(out, strings.Fields(v)...)
	}
	return out
}

func (u unitFile) execStart() ([]string, map[string]string, error) {
	v := u["Service"]["ExecStart"]
	if len(v) != 1 {
		return nil, nil, fmt.Errorf("want one ExecStart, found %d", len(v))
	}
	argv := strings.Fields(strings.TrimLeft(v[0], "-@:+!"))
	if len(argv) == 0 || !filepath.IsAbs(argv[0]) || !isBrokerBinary(argv[0]) {
		return nil, nil, fmt.Errorf("ExecStart %q does not run secretless-broker by absolute path", v[0])
	}
	flags, err := parseBrokerFlags(argv[1:])
	return argv, flags, err
}

func within(p, dir string) bool {
	p, dir = path.Clean(p), path.Clean(dir)
	return p == dir || strings.HasPrefix(p, dir+"/") || dir == "/"
}

type unitCheck struct {
	name  string
	check func(u unitFile) []error
}

var unitChecks = []unitCheck{
	{"sections", func(u unitFile) []error {
		var errs []error
		for _, s := range []string{"Unit", "Service", "Install"} {
			if u[s] == nil {
				errs = append(errs, fmt.Errorf("no [%s] section", s))
			}
		}
		return errs
	}},
	{"ExecStart has -f, -p and -s", func(u unitFile) []error {
		_, flags, err := u.execStart()
		if err != nil {
			return []error{err}
		}
		var errs []error
		for _, f := range []string{"f", "p", "s"} {
			if v, ok := flags[f]; !ok || !filepath.IsAbs(v) {
				errs = append(errs, fmt.Errorf("ExecStart: -%s missing or not an absolute path", f))
			}
		}
		return errs
	}},
	{"runs as a non-root user", func(u unitFile) []error {
		if v, _ := u.get("Service", "DynamicUser"); v == "yes" {
			return nil
		}
		user, ok := u.get("Service", "User")
		if !ok || user == "" || user == "root" || user == "0" {
			return []error{fmt.Errorf("User=%q: the broker should not run as root", user)}
		}
		if v, _ := u.get("Service", "NoNewPrivileges"); v != "yes" {
			return []error{errors.New("NoNewPrivileges is not yes")}
		}
		if v, _ := u.get("Service", "ProtectSystem"); v != "strict" {
			return []error{fmt.Errorf("ProtectSystem=%q, want strict", v)}
		}
		return nil
	}},
	{"TMPDIR is writable and exec-able", func(u unitFile) []error {
		tmp := ""
		for _, w := range u.values("Service", "Environment") {
			if v, ok := strings.CutPrefix(strings.Trim(w, `"`), "TMPDIR="); ok {
				tmp = v
			}
		}
		if tmp == "" {
			return []error{errors.New("no Environment=TMPDIR=...: under ProtectSystem=strict the broker needs a writable place for plugin copies")}
		}
		writable := false
		for key, base := range map[string]string{"CacheDirectory": "/var/cache", "StateDirectory": "/var/lib", "RuntimeDirectory": "/run"} {
			for _, d := range u.values("Service", key) {
				if within(tmp, path.Join(base, d)) {
					writable = true
				}
			}
		}
		for _, d := range u.values("Service", "ReadWritePaths") {
			if within(tmp, strings.TrimLeft(d, "-+")) {
				writable = true
			}
		}
		var errs []error
		if !writable {
			errs = append(errs, fmt.Errorf("TMPDIR %s is in no CacheDirectory, StateDirectory or ReadWritePaths: read-only under ProtectSystem=strict", tmp))
		}
		if within(tmp, "/run") || within(tmp, "/dev/shm") {
			errs = append(errs, fmt.Errorf("TMPDIR %s: /run and /dev/shm are usually mounted noexec, so plugins could not be mapped", tmp))
		}
		noexec := false
		for _, d := range u.values("Service", "NoExecPaths") {
			if within(tmp, strings.TrimLeft(d, "-")) {
				noexec = true
			}
		}
		for _, d := range u.values("Service", "ExecPaths") {
			if within(tmp, strings.TrimLeft(d, "-")) {
				noexec = false
			}
		}
		if noexec {
			errs = append(errs, fmt.Errorf("TMPDIR %s is under NoExecPaths: dlopen of the plugin copies would fail", tmp))
		}
		return errs
	}},
	{"stop timeout covers the shutdown timeout", func(u unitFile) []error {
		_, flags, err := u.execStart()
		if err != nil {
			return []error{err}
		}
		timeout := defaultShutdownTimeout
		if s, ok := flags["shutdown-timeout"]; ok {
			if timeout, err = time.ParseDuration(s); err != nil {
				return []error{err}
			}
		}
		stop, ok := u.get("Service", "TimeoutStopSec")
		if !ok {
			return []error{errors.New("no TimeoutStopSec (systemd's default is 90s, but say it)")}
		}
		d, err := time.ParseDuration(stop)
		if err != nil {
			if n, err2 := strconv.Atoi(stop); err2 == nil {
				d, err = time.Duration(n)*time.Second, nil
			}
		}
		if err != nil {
			return []error{fmt.Errorf("TimeoutStopSec=%s: %v", stop, err)}
		}
		if d <= timeout {
			return []error{fmt.Errorf("TimeoutStopSec=%s is not longer than -shutdown-timeout %s", stop, timeout)}
		}
		if sig, _ := u.get("Service", "KillSignal"); sig != "" && sig != "SIGTERM" && sig != "SIGINT" {
			return []error{fmt.Errorf("KillSignal=%s: the broker drains on SIGTERM or SIGINT only", sig)}
		}
		return nil
	}},
}

func runUnitChecks(src string) (map[string][]error, error) {
	u, err := parseUnit(src)
	if err != nil {
		return nil, err
	}
	out := map[string][]error{}
	for _, c := range unitChecks {
		out[c.name] = c.check(u)
	}
	return out, nil
}

func TestSystemdUnit(t *testing.T) {
	data, err := os.ReadFile(systemdUnitPath)
	if err != nil {
		t.Fatal(err)
	}
	results, err := runUnitChecks(string(data))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range unitChecks {
		t.Run(c.name, func(t *testing.T) {
			for _, err := range results[c.name] {
				t.Error(err)
			}
		})
	}
	breaks := []struct{ name, check, from, to string }{
		{"no -s", "ExecStart has -f, -p and -s", "-p /usr/local/lib/secretless -s /etc/secretless/PLUGINS_SHA256SUM.txt -health-addr", "-p /usr/local/lib/secretless -health-addr"},
		{"no -p", "ExecStart has -f, -p and -s", "-f /etc/secretless/secretless.yml -p /usr/local/lib/secretless", "-f /etc/secretless/secretless.yml"},
		{"root", "runs as a non-root user", "User=secretless", "User=root"},
		{"TMPDIR noexec", "TMPDIR is writable and exec-able", "\nMemoryDenyWriteExecute=yes\n", "\nMemoryDenyWriteExecute=yes\nNoExecPaths=/var/cache\n"},
		{"TMPDIR in /run", "TMPDIR is writable and exec-able", "Environment=TMPDIR=/var/cache/secretless-broker", "Environment=TMPDIR=/run/secretless"},
		{"TMPDIR read-only", "TMPDIR is writable and exec-able", "CacheDirectory=secretless-broker", "CacheDirectory=other"},
		{"short stop timeout", "stop timeout covers the shutdown timeout", "TimeoutStopSec=45s", "TimeoutStopSec=10s"},
	}
	for _, tc := range breaks {
		t.Run("notices "+tc.name, func(t *testing.T) {
			if n := strings.Count(string(data), tc.from); n != 1 {
				t.Fatalf("%q occurs %d times in %s, want once", tc.from, n, systemdUnitPath)
			}
			broken := strings.Replace(string(data), tc.from, tc.to, 1)
			res, err := runUnitChecks(broken)
			if err == nil && len(res[tc.check]) == 0 {
				t.Errorf("check %q did not notice", tc.check)
			}
		})
	}
	t.Run("systemd-analyze verify", func(t *testing.T) {
		sa := needTool(t, "systemd-analyze") // fails, not skips, under SECRETLESS_REQUIRE_INTEGRATION=1
		// verify insists that ExecStart's binary exists; point it at one that does.
		argv, _, err := parseUnit2ExecStart(data)
		if err != nil {
			t.Fatal(err)
		}
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		unit := filepath.Join(t.TempDir(), path.Base(systemdUnitPath))
		if err := os.WriteFile(unit, bytes.Replace(data, []byte("ExecStart="+argv[0]), []byte("ExecStart="+self), 1), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(sa, "verify", unit).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})
}

func parseUnit2ExecStart(data []byte) ([]string, map[string]string, error) {
	u, err := parseUnit(string(data))
	if err != nil {
		return nil, nil, err
	}
	return u.execStart()
}

// ---------------------------------------------------------------------------
// The health check script (the image's HEALTHCHECK).

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("SECRETLESS_REQUIRE_INTEGRATION") == "1" {
			t.Fatalf("%s not found and SECRETLESS_REQUIRE_INTEGRATION=1: %v", name, err)
		}
		t.Skipf("%s not found: %v", name, err)
	}
	return p
}

func runHealthcheck(t *testing.T, addr string, args ...string) (int, string) {
	t.Helper()
	bash := needTool(t, "bash")
	cmd := exec.Command(bash, append([]string{healthcheckPath}, args...)...)
	cmd.Env = append(os.Environ(), "SECRETLESS_HEALTH_ADDR="+addr)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	default:
		t.Fatal(err)
		return -1, ""
	}
}

func TestHealthcheckScript(t *testing.T) {
	s, err := health.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve() }()
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	addr := s.Addr().String()
	_, port, _ := splitHostPort(addr)
	closedAddr := freeAddr(t)

	steps := []struct {
		name   string
		setup  func()
		addr   string
		args   []string
		wantOK bool
	}{
		{"not ready yet", func() {}, addr, nil, false},
		{"live while starting", func() {}, addr, []string{"/live"}, true},
		{"ready", func() { s.SetStarted(); s.SetReady(true) }, addr, nil, true},
		{"bare :PORT means loopback", func() {}, ":" + strconv.Itoa(port), nil, true},
		{"unknown path", func() {}, addr, []string{"/nope"}, false},
		{"shutting down", func() { s.SetReady(false) }, addr, nil, false},
		{"nothing listening", func() {}, closedAddr, nil, false},
		{"bad address", func() {}, "localhost", nil, false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.setup()
			code, out := runHealthcheck(t, st.addr, st.args...)
			if (code == 0) != st.wantOK {
				t.Errorf("exit %d, want success=%v; output:\n%s", code, st.wantOK, out)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// The build recipe, for real: the image runs deploy/build.sh; here it runs on
// this machine, and the broker it makes must accept the plugins it makes,
// the checksum file it writes, and the configs of the Kubernetes examples.

func TestBuildRecipe(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the broker and the plugins; skipped with -short")
	}
	for _, tool := range []string{"go", "gcc", "sha256sum", "sh", "bash"} {
		needTool(t, tool)
	}
	out := t.TempDir()
	cmd := exec.Command("sh", "deploy/build.sh", out)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "VERSION=deploy-test")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("deploy/build.sh: %v\n%s", err, b)
	}
	bin := filepath.Join(out, "secretless-broker")
	sums := filepath.Join(out, "PLUGINS_SHA256SUM.txt")
	run := func(t *testing.T, env []string, args ...string) string {
		t.Helper()
		c := exec.Command(bin, args...)
		c.Env = append(os.Environ(), env...)
		b, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("secretless-broker %s: %v\n%s", strings.Join(args, " "), err, b)
		}
		return string(b)
	}

	t.Run("version is stamped", func(t *testing.T) {
		if got := run(t, nil, "version"); !strings.Contains(got, "secretless-broker deploy-test") {
			t.Errorf("version output:\n%s", got)
		}
	})
	t.Run("plugins verify", func(t *testing.T) {
		run(t, nil, "plugins", "verify", "-p", filepath.Join(out, "plugins"), "-s", sums)
	})
	t.Run("checksum file lists what the ConfigMap lists", func(t *testing.T) {
		data, err := os.ReadFile(sums)
		if err != nil {
			t.Fatal(err)
		}
		entries, err := plugins.ParseChecksums(data)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range entries {
			if e.Name != e.Base {
				t.Errorf("entry %q is not a bare file name", e.Name)
			}
			got = append(got, e.Base)
		}
		sort.Strings(got)
		want, err := shippedPlugins()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("build.sh wrote %v, its PLUGIN_PKGS default says %v", got, want)
		}
	})
	for _, variant := range variantFiles(t) {
		b, err := loadBundle(variant)
		if err != nil {
			t.Fatal(err)
		}
		p, err := newPod(b, b.deployments[0])
		if err != nil {
			t.Fatal(err)
		}
		t.Run(b.name+"/init container installs and verifies", func(t *testing.T) {
			inst, errs := p.installers()
			if len(errs) > 0 || len(inst) != 1 {
				t.Fatalf("installers: %v %v", inst, errs)
			}
			// The init container's own command, with the pod's paths mapped
			// to this machine's.
			podPlugins := t.TempDir()
			script := strings.Join(inst[0].c.Args, " ")
			if len(inst[0].c.Command) < 2 || inst[0].c.Command[1] != "-c" {
				t.Fatalf("init container command %q: want a shell with -c", inst[0].c.Command)
			}
			script = strings.NewReplacer(
				imagePluginDir, filepath.Join(out, "plugins"),
				"/usr/local/bin/secretless-broker", bin,
				inst[0].dir, podPlugins,
				inst[0].sum, sums,
			).Replace(script)
			if b, err := exec.Command("sh", "-c", script).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", script, err, b)
			}
			run(t, nil, "plugins", "verify", "-p", podPlugins, "-s", sums)
		})
		t.Run(b.name+"/config validates with the built plugins", func(t *testing.T) {
			cfg, src, err := p.brokerConfig()
			if err != nil {
				t.Fatal(err)
			}
			f := filepath.Join(t.TempDir(), "secretless.yml")
			if err := os.WriteFile(f, []byte(src.content), 0o600); err != nil {
				t.Fatal(err)
			}
			run(t, p.credentialEnv(cfg), "validate", "-f", f, "-p", filepath.Join(out, "plugins"), "-s", sums)
		})
	}
	t.Run("broker starts, health check passes, SIGTERM exits 0", func(t *testing.T) {
		testBrokerLifecycle(t, bin, filepath.Join(out, "plugins"), sums)
	})
}

// freeAddr returns a loopback address nothing listens on (another process
// could take it before the caller does; the broker then fails loudly).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	_ = ln.Close()
	return a
}

func testBrokerLifecycle(t *testing.T, bin, pluginDir, sums string) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "secretless.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`version: 2
services:
  cache:
    connector: redis
    listenOn: tcp://%s
    credentials:
      host: 127.0.0.1
      password:
        from: env
        get: REDIS_PASSWORD
`, freeAddr(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	healthAddr := freeAddr(t)
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd := exec.Command(bin, "-f", cfg, "-p", pluginDir, "-s", sums, "-health-addr", healthAddr, "-shutdown-timeout", "5s")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "REDIS_PASSWORD=not-used")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _ := runHealthcheck(t, healthAddr)
		if code == 0 {
			break
		}
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("broker exited before it was ready: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("health check never passed\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, out := runHealthcheck(t, healthAddr, "/live"); code != 0 {
		t.Errorf("/live: exit %d: %s", code, out)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		stopped = true
		if err != nil {
			t.Errorf("broker exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("broker did not exit after SIGTERM\n%s", logs.String())
	}
	if code, _ := runHealthcheck(t, healthAddr); code == 0 {
		t.Error("health check passes after the broker exited")
	}
}
