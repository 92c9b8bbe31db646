package deploy

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/omninode/lockworker/internal/config"
	"github.com/omninode/lockworker/worker"
)

// root is the repository, seen from this package's directory.
const root = ".."

// credentials are the settings that belong in a Secret, never in a
// ConfigMap or an image. KAFKA_SASL_USERNAME is not masked in logs, but it is
// half of a credential and rotates with the password.
var credentials = []string{"DATABASE_URL", "POSTGRES_PASSWORD", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "INSPECT_TOKEN"}

// fileSecrets are the credentials lockworker also reads from the file that
// NAME_FILE names, which keeps them out of the process environment
// (TestFileSecrets holds the list to config's); KAFKA_SASL_USERNAME, a name
// it logs, has no _FILE.
var fileSecrets = []string{"DATABASE_URL", "POSTGRES_PASSWORD", "KAFKA_SASL_PASSWORD", "INSPECT_TOKEN"}

// goRuntimeVars may appear in a container's environment beside lockworker's
// settings: they tune the Go runtime, not lockworker.
var goRuntimeVars = []string{"GOMEMLIMIT", "GOMAXPROCS", "GOGC", "GODEBUG"}

// knownSettings is every environment variable lockworker reads: config's
// Redacted lists each one by name.
func knownSettings(t *testing.T) map[string]bool {
	t.Helper()
	known := map[string]bool{}
	for k := range config.Default().Redacted() {
		known[k] = true
	}
	require.Greater(t, len(known), 30, "config.Redacted() no longer names every setting?")
	for _, c := range credentials {
		require.True(t, known[c], "%s is not a setting any more; update credentials", c)
	}
	return known
}

// TestFileSecrets checks fileSecrets against config: each NAME_FILE is
// read (set with NAME, it is refused), and KAFKA_SASL_USERNAME has none.
func TestFileSecrets(t *testing.T) {
	for _, name := range credentials {
		_, err := config.FromEnv(func(k string) string {
			return map[string]string{name: "x", name + "_FILE": "/nonexistent"}[k]
		})
		together := name + "_FILE: set together with " + name
		if slices.Contains(fileSecrets, name) {
			assert.ErrorContains(t, err, together, "%s_FILE is not read: update fileSecrets", name)
		} else if err != nil {
			assert.NotContains(t, err.Error(), together, "%s_FILE is read: add %s to fileSecrets", name, name)
		}
	}
}

// checkEnv checks that every name is a known setting (or a secret's _FILE)
// and that the whole environment is a valid configuration, and returns it.
func checkEnv(t *testing.T, where string, env map[string]string) config.Config {
	t.Helper()
	known := knownSettings(t)
	for name := range env {
		secret, isFile := strings.CutSuffix(name, "_FILE")
		assert.True(t, known[name] || (isFile && slices.Contains(fileSecrets, secret)),
			"%s sets %s, which is not a lockworker setting (config.Redacted names them all, fileSecrets the _FILEs)", where, name)
	}
	cfg, err := config.WorkerFromEnv(func(k string) string { return env[k] })
	require.NoError(t, err, "%s: config.WorkerFromEnv (lockworker's) refuses this environment", where)
	return cfg
}

func httpPort(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	require.NoError(t, err, "HTTP_ADDR %q", addr)
	n, err := strconv.Atoi(p)
	require.NoError(t, err, "HTTP_ADDR %q", addr)
	return n
}

// ---------------------------------------------------------------- Kubernetes

type objectMeta struct {
	Name        string            `yaml:"name"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type k8sObject struct {
	APIVersion string         `yaml:"apiVersion"`
	Kind       string         `yaml:"kind"`
	Metadata   objectMeta     `yaml:"metadata"`
	Data       map[string]any `yaml:"data"`
	StringData map[string]any `yaml:"stringData"`
	Type       string         `yaml:"type"`
	Spec       yaml.Node      `yaml:"spec"`

	file string
}

type labelSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type probe struct {
	HTTPGet *struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"`
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	TimeoutSeconds   int `yaml:"timeoutSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

type envVar struct {
	Name      string  `yaml:"name"`
	Value     *string `yaml:"value"`
	ValueFrom *struct {
		SecretKeyRef *struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
		} `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

type container struct {
	Name            string `yaml:"name"`
	Image           string `yaml:"image"`
	ImagePullPolicy string `yaml:"imagePullPolicy"`
	Ports           []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	EnvFrom []struct {
		ConfigMapRef *struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
		SecretRef *struct {
			Name string `yaml:"name"`
		} `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Env       []envVar `yaml:"env"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	StartupProbe   *probe `yaml:"startupProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	VolumeMounts   []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type volume struct {
	Name   string `yaml:"name"`
	Secret *struct {
		SecretName  string `yaml:"secretName"`
		Optional    bool   `yaml:"optional"`
		DefaultMode *int   `yaml:"defaultMode"`
	} `yaml:"secret"`
}

type deploymentSpec struct {
	Replicas int           `yaml:"replicas"`
	Selector labelSelector `yaml:"selector"`
	Template struct {
		Metadata objectMeta `yaml:"metadata"`
		Spec     struct {
			TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
			SecurityContext               struct {
				RunAsNonRoot *bool `yaml:"runAsNonRoot"`
				RunAsUser    *int  `yaml:"runAsUser"`
				FSGroup      *int  `yaml:"fsGroup"`
			} `yaml:"securityContext"`
			Containers []container `yaml:"containers"`
			Volumes    []volume    `yaml:"volumes"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

type serviceSpec struct {
	Selector map[string]string `yaml:"selector"`
	Ports    []struct {
		Name       string    `yaml:"name"`
		Port       int       `yaml:"port"`
		TargetPort yaml.Node `yaml:"targetPort"`
	} `yaml:"ports"`
}

type pdbSpec struct {
	MinAvailable               yaml.Node     `yaml:"minAvailable"`
	MaxUnavailable             yaml.Node     `yaml:"maxUnavailable"`
	Selector                   labelSelector `yaml:"selector"`
	UnhealthyPodEvictionPolicy string        `yaml:"unhealthyPodEvictionPolicy"`
}

// readYAMLDocs parses every document of a YAML file into out's element type.
func readYAMLDocs[T any](t *testing.T, file string) []T {
	t.Helper()
	f, err := os.Open(file)
	require.NoError(t, err)
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var out []T
	for {
		var v T
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "parsing %s", file)
		out = append(out, v)
	}
	require.NotEmpty(t, out, "%s holds no YAML document", file)
	return out
}

func decodeSpec[T any](t *testing.T, o k8sObject) T {
	t.Helper()
	var v T
	require.NoError(t, o.Spec.Decode(&v), "%s %s in %s: spec", o.Kind, o.Metadata.Name, o.file)
	return v
}

// selects reports whether a selector picks pods with these labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func TestKubernetes(t *testing.T) {
	dir := filepath.Join(root, "deploy", "kubernetes")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)

	var objs []k8sObject
	byKind := map[string][]k8sObject{}
	var kustomization struct {
		Resources []string `yaml:"resources"`
		Images    []struct {
			Name   string `yaml:"name"`
			NewTag string `yaml:"newTag"`
			Digest string `yaml:"digest"`
		} `yaml:"images"`
	}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			docs := readYAMLDocs[yaml.Node](t, f)
			require.Len(t, docs, 1)
			require.NoError(t, docs[0].Decode(&kustomization))
			continue
		}
		for _, o := range readYAMLDocs[k8sObject](t, f) {
			o.file = filepath.Base(f)
			require.NotEmpty(t, o.APIVersion, "%s: a document without apiVersion", f)
			require.NotEmpty(t, o.Kind, "%s: a document without kind", f)
			require.NotEmpty(t, o.Metadata.Name, "%s: a %s without metadata.name", f, o.Kind)
			objs = append(objs, o)
			byKind[o.Kind] = append(byKind[o.Kind], o)
		}
	}

	apiVersions := map[string]string{"Deployment": "apps/v1", "Service": "v1", "ConfigMap": "v1", "Secret": "v1", "PodDisruptionBudget": "policy/v1"}
	for _, o := range objs {
		want, ok := apiVersions[o.Kind]
		require.True(t, ok, "%s: unexpected kind %s", o.file, o.Kind)
		assert.Equal(t, want, o.APIVersion, "%s: %s", o.file, o.Kind)
	}
	for kind := range apiVersions {
		require.Len(t, byKind[kind], 1, "want exactly one %s", kind)
	}
	cm, secret := byKind["ConfigMap"][0], byKind["Secret"][0]
	deploy, svc, pdb := byKind["Deployment"][0], byKind["Service"][0], byKind["PodDisruptionBudget"][0]

	t.Run("kustomization", func(t *testing.T) {
		listed := map[string]bool{}
		for _, r := range kustomization.Resources {
			listed[r] = true
			assert.FileExists(t, filepath.Join(dir, r))
		}
		for _, o := range objs {
			if o.Kind == "Secret" {
				assert.False(t, listed[o.file], "the example Secret must not be applied by kustomize: it would overwrite the real one")
				continue
			}
			assert.True(t, listed[o.file], "%s is not in kustomization.yaml resources", o.file)
		}
		d := decodeSpec[deploymentSpec](t, deploy)
		require.Len(t, kustomization.Images, 1)
		assert.Equal(t, d.Template.Spec.Containers[0].Image, kustomization.Images[0].Name, "kustomization images[].name must match the container image to rewrite it")
		// With a moving tag, Always (Kubernetes's default for "latest")
		// keeps a node from starting a stale cached build and lets a
		// rollout restart bring the newest to every pod; IfNotPresent would
		// leave each node on the build it pulled first. Neither keeps builds
		// apart (any restart pulls a newly pushed "latest"): the comments
		// must say a version tag or digest is needed beyond a trial, not
		// that Always prevents mixed builds.
		img := kustomization.Images[0]
		if img.Digest == "" && (img.NewTag == "" || img.NewTag == "latest") {
			assert.Equal(t, "Always", d.Template.Spec.Containers[0].ImagePullPolicy,
				"the kustomization's image tag is %q: imagePullPolicy must be Always until a version tag or digest is pinned", img.NewTag)
			for _, f := range []string{"kustomization.yaml", "deployment.yaml"} {
				text := commentProse(t, filepath.Join(dir, f))
				assert.True(t, strings.Contains(text, "beyond a trial, pin a version tag or digest") || strings.Contains(text, "beyond a trial, a version tag"),
					"%s must say a pinned version tag or digest is needed beyond a trial", f)
				assert.NotRegexp(t, `so (every node runs the same build|no node keeps an older build)`, text,
					"%s: Always does not keep builds apart", f)
			}
		}
	})

	t.Run("secret example", func(t *testing.T) {
		assert.Equal(t, "Opaque", secret.Type)
		assert.True(t, strings.HasSuffix(secret.file, ".example.yaml"), "the Secret's file must say it is an example: %s", secret.file)
		require.NotEmpty(t, secret.StringData)
		assert.Empty(t, secret.Data, "use stringData so the example reads as text")
		for k, v := range secret.StringData {
			assert.Contains(t, credentials, k, "the Secret holds %s, which is not a credential setting", k)
			if k != "KAFKA_SASL_USERNAME" {
				assert.Contains(t, v, "CHANGE-ME", "%s must be an obvious placeholder", k)
			}
		}
		// Applied unedited, the example must not open the inspection
		// endpoints to a guessable token.
		_, err := config.FromEnv(func(k string) string { s, _ := secret.StringData[k].(string); return s })
		assert.ErrorContains(t, err, "INSPECT_TOKEN: is shorter than", "the example's INSPECT_TOKEN placeholder must be refused")
		// The CA Secret is optional: a default URL naming its file would
		// stop every pod of a cluster without it (pgx reads the file while
		// parsing the URL).
		dbURL, _ := secret.StringData["DATABASE_URL"].(string)
		assert.NotContains(t, dbURL, "sslrootcert", "the example DATABASE_URL must not need the optional lockworker-postgres-ca Secret; show sslrootcert as a variant in comments")
	})

	d := decodeSpec[deploymentSpec](t, deploy)
	require.Len(t, d.Template.Spec.Containers, 1)
	c := d.Template.Spec.Containers[0]
	secretValues := map[string]string{}
	for k, v := range secret.StringData {
		s, ok := v.(string)
		require.True(t, ok, "Secret %s: %s must be a string", secret.Metadata.Name, k)
		secretValues[k] = s
	}
	// The placeholder is refused (above): stand in a real one.
	secretValues["INSPECT_TOKEN"] = strings.Repeat("0f", 32)
	// The Secret's volume and where the container mounts it.
	var secretVolume volume
	secretMount := ""
	for _, v := range d.Template.Spec.Volumes {
		if v.Secret == nil || v.Secret.SecretName != secret.Metadata.Name {
			continue
		}
		secretVolume = v
		for _, m := range c.VolumeMounts {
			if m.Name == v.Name {
				secretMount = m.MountPath
			}
		}
	}
	// The Secret's files, one per key, in a directory standing in for
	// that mount.
	secretFiles := t.TempDir()
	for k, v := range secretValues {
		require.NoError(t, os.WriteFile(filepath.Join(secretFiles, k), []byte(v), 0o400))
	}

	// The environment every pod gets: the ConfigMap, then env entries (a
	// path under the Secret's mount names its file in secretFiles; a
	// secretKeyRef gives the Secret's value, another valueFrom a pod name).
	env := map[string]string{}
	for k, v := range cm.Data {
		s, ok := v.(string)
		require.True(t, ok, "ConfigMap %s: %s must be a quoted string (Kubernetes refuses %T)", cm.Metadata.Name, k, v)
		env[k] = s
	}
	for _, e := range c.Env {
		if slices.Contains(goRuntimeVars, e.Name) {
			continue
		}
		switch {
		case e.Value != nil:
			env[e.Name] = *e.Value
			if rel, ok := strings.CutPrefix(*e.Value, secretMount+"/"); ok && secretMount != "" {
				env[e.Name] = filepath.Join(secretFiles, rel)
			}
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			assert.Equal(t, secret.Metadata.Name, ref.Name, "env %s: secretKeyRef names another Secret", e.Name)
			env[e.Name] = secretValues[ref.Key]
		case e.ValueFrom != nil:
			env[e.Name] = "lockworker-5d9c7b8f6-x2x9q" // a pod name
		default:
			t.Errorf("env %s has neither value nor valueFrom", e.Name)
		}
	}

	t.Run("configuration", func(t *testing.T) {
		for k := range cm.Data {
			assert.NotContains(t, credentials, k, "%s is a credential: it belongs in the Secret, not the ConfigMap", k)
		}
		cfg := checkEnv(t, "deploy/kubernetes", env)
		assert.False(t, cfg.EmbeddedKafka(), "KAFKA_BOOTSTRAP_SERVERS must be set: the embedded broker is for development")
		// Each of the Secret's values reaches lockworker.
		assert.Equal(t, secretValues["DATABASE_URL"], cfg.Postgres.URL, "DATABASE_URL (from the Secret)")
		assert.Equal(t, secretValues["KAFKA_SASL_USERNAME"], cfg.Kafka.SASL.Username, "KAFKA_SASL_USERNAME (from the Secret)")
		assert.Equal(t, secretValues["KAFKA_SASL_PASSWORD"], cfg.Kafka.SASL.Password, "KAFKA_SASL_PASSWORD (from the Secret)")
		assert.Equal(t, secretValues["INSPECT_TOKEN"], cfg.InspectToken, "INSPECT_TOKEN (from the Secret)")

		// Every setting is set somewhere, or left out for a reason the
		// ConfigMap's comment gives.
		raw, err := os.ReadFile(filepath.Join(dir, cm.file))
		require.NoError(t, err)
		omitted := []string{"POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DATABASE", "POSTGRES_USER", "POSTGRES_PASSWORD", "EMBEDDED_KAFKA_ADDR", "EMBEDDED_KAFKA_DIR", "EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT"}
		for name := range knownSettings(t) {
			_, set := env[name]
			_, setFile := env[name+"_FILE"]
			if set || setFile {
				assert.NotContains(t, omitted, name)
				continue
			}
			if slices.Contains(omitted, name) {
				short := strings.TrimPrefix(name, "POSTGRES_")
				assert.True(t, bytes.Contains(raw, []byte(name)) || bytes.Contains(raw, []byte("_"+short)),
					"%s is left out; the ConfigMap's comment must say why", name)
				continue
			}
			t.Errorf("setting %s is in neither the ConfigMap, the Secret nor the Deployment", name)
		}

		// envFrom names the ConfigMap that exists.
		var cmRef string
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef != nil {
				cmRef = ef.ConfigMapRef.Name
			}
		}
		assert.Equal(t, cm.Metadata.Name, cmRef, "envFrom configMapRef")
		for _, e := range c.Env {
			if e.Name == "INSTANCE_ID" {
				require.NotNil(t, e.ValueFrom, "INSTANCE_ID should be the pod name (fieldRef), unique per replica")
			}
		}
	})

	// The secrets come in as files of the mounted Secret, which their
	// _FILE settings name, never as env, where /proc/<pid>/environ, a
	// crash dump or a child process shows them (README "Configuration").
	t.Run("secrets", func(t *testing.T) {
		for _, ef := range c.EnvFrom {
			assert.Nil(t, ef.SecretRef, "envFrom secretRef puts every secret in the process environment: mount the Secret and set the _FILE settings")
		}
		raw := map[string]string{}
		fromSecret := map[string]string{}
		for _, e := range c.Env {
			assert.NotContains(t, fileSecrets, e.Name, "env %s: a secret in the process environment; set %s_FILE to its file in the Secret's mount instead", e.Name, e.Name)
			if e.Value != nil {
				raw[e.Name] = *e.Value
			}
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				fromSecret[e.Name] = e.ValueFrom.SecretKeyRef.Key
			}
		}
		require.NotEmpty(t, secretMount, "the Secret %s must be mounted as a volume", secret.Metadata.Name)
		for k := range secret.StringData {
			if slices.Contains(fileSecrets, k) {
				assert.Equal(t, secretMount+"/"+k, raw[k+"_FILE"], "%s_FILE must name the Secret's file %s", k, k)
			} else {
				assert.Equal(t, k, fromSecret[k], "%s has no _FILE setting: env from the Secret's key (secretKeyRef)", k)
			}
		}
		v := secretVolume.Secret
		assert.False(t, v.Optional, "volume %s: the Secret %s is required", secretVolume.Name, v.SecretName)
		// Kubernetes writes the files as root's (mode 0644 by default)
		// and gives them the pod's fsGroup: read through that group,
		// others not.
		require.NotNil(t, v.DefaultMode, "volume %s: set defaultMode, or every user in the container reads the secrets", secretVolume.Name)
		assert.Zero(t, *v.DefaultMode&0o007, "volume %s: defaultMode %#o lets every user read the secrets", secretVolume.Name, *v.DefaultMode)
		assert.NotZero(t, *v.DefaultMode&0o040, "volume %s: defaultMode %#o: the group (fsGroup) must read the files", secretVolume.Name, *v.DefaultMode)
		assert.NotNil(t, d.Template.Spec.SecurityContext.FSGroup, "fsGroup must be set: the secrets' files are root's, read by lockworker through that group")
	})

	t.Run("deployment", func(t *testing.T) {
		assert.Equal(t, 3, d.Replicas)
		assert.True(t, selects(d.Selector.MatchLabels, d.Template.Metadata.Labels), "the Deployment's selector must match its pods")

		port := httpPort(t, env["HTTP_ADDR"])
		named := map[string]int{}
		for _, p := range c.Ports {
			named[p.Name] = p.ContainerPort
		}
		assert.Contains(t, maps(named), port, "a containerPort must be HTTP_ADDR's port %d", port)
		resolve := func(n yaml.Node) int {
			if n.Tag == "!!int" {
				v, err := strconv.Atoi(n.Value)
				require.NoError(t, err)
				return v
			}
			v, ok := named[n.Value]
			require.True(t, ok, "port name %q is not a containerPort", n.Value)
			return v
		}
		for name, p := range map[string]*probe{"startupProbe": c.StartupProbe, "readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
			if name == "startupProbe" && p == nil {
				continue
			}
			require.NotNil(t, p, name)
			require.NotNil(t, p.HTTPGet, "%s must be an httpGet", name)
			want := "/health"
			if name != "readinessProbe" {
				// The process only: an outage of PostgreSQL or Kafka, or a
				// long migration at start (/health says "starting"), must
				// not restart pods.
				want = "/health/live"
			}
			assert.Equal(t, want, p.HTTPGet.Path, name)
			assert.Equal(t, port, resolve(p.HTTPGet.Port), "%s must ask HTTP_ADDR's port", name)
		}
		// A liveness probe that gives up before readiness does would
		// restart pods during a short outage instead of just unreadying them.
		live := c.LivenessProbe.PeriodSeconds * max(c.LivenessProbe.FailureThreshold, 1)
		ready := c.ReadinessProbe.PeriodSeconds * max(c.ReadinessProbe.FailureThreshold, 1)
		assert.Greater(t, live, ready, "liveness must be more patient than readiness")
		if v := d.Template.Metadata.Annotations["prometheus.io/port"]; v != "" {
			assert.Equal(t, strconv.Itoa(port), v, "prometheus.io/port")
		}

		require.NotNil(t, d.Template.Spec.TerminationGracePeriodSeconds)
		assert.Greater(t, time.Duration(*d.Template.Spec.TerminationGracePeriodSeconds)*time.Second, binaryStopDeadline(t),
			"terminationGracePeriodSeconds must outlast the stop")

		for _, r := range []string{"cpu", "memory"} {
			assert.NotEmpty(t, c.Resources.Requests[r], "resources.requests.%s", r)
		}
		assert.NotEmpty(t, c.Resources.Limits["memory"], "resources.limits.memory")

		// Memory: the Go soft limit (GOMEMLIMIT, or the binary's default)
		// sits below the container's limit, and the request covers the
		// peak RSS measured under the binary's default.
		request := memQuantity(t, c.Resources.Requests["memory"])
		limit := memQuantity(t, c.Resources.Limits["memory"])
		soft := binaryMemoryLimit(t)
		for _, e := range c.Env {
			if e.Name == "GOMEMLIMIT" {
				require.NotNil(t, e.Value, "GOMEMLIMIT needs a value")
				soft = memQuantity(t, *e.Value)
			}
		}
		assert.LessOrEqual(t, request, limit, "requests.memory above limits.memory")
		// At least a tenth below, as deployment.yaml's comment and the
		// README's Kubernetes notes say.
		assert.LessOrEqual(t, soft, limit-limit/10, "the Go soft memory limit (GOMEMLIMIT) must stay at least a tenth below limits.memory, for what is not heap")
		assert.GreaterOrEqual(t, request, max(soft, measuredPeakRSS(t)),
			"requests.memory must cover the soft memory limit and the peak RSS measured under it (docs/performance.md)")

		sc := d.Template.Spec.SecurityContext
		require.NotNil(t, sc.RunAsNonRoot)
		assert.True(t, *sc.RunAsNonRoot)
		require.NotNil(t, sc.RunAsUser)
		assert.NotZero(t, *sc.RunAsUser)
		require.NotNil(t, c.SecurityContext.AllowPrivilegeEscalation)
		assert.False(t, *c.SecurityContext.AllowPrivilegeEscalation)
		assert.True(t, c.SecurityContext.ReadOnlyRootFilesystem)
		assert.Contains(t, c.SecurityContext.Capabilities.Drop, "ALL")
	})

	t.Run("volumes", func(t *testing.T) {
		readme, err := os.ReadFile(filepath.Join(root, "README.md"))
		require.NoError(t, err)
		volumes := map[string]volume{}
		for _, v := range d.Template.Spec.Volumes {
			volumes[v.Name] = v
			require.NotNil(t, v.Secret, "volume %s: only Secret volumes are expected", v.Name)
			// A Secret the operator creates: either the pods start without
			// it, or the README's Kubernetes steps say to create it.
			if !v.Secret.Optional {
				assert.Contains(t, string(readme), "kubectl create secret generic "+v.Secret.SecretName,
					"volume %s: Secret %s is required (not optional) but the README never says to create it", v.Name, v.Secret.SecretName)
			}
		}
		// The TLS files a cluster may or may not have: pods must start
		// without their Secrets (the settings that name them are off by
		// default, and DATABASE_URL's example names no sslrootcert).
		for name, secretName := range map[string]string{
			"kafka-ca":     "lockworker-kafka-ca",
			"kafka-client": "lockworker-kafka-client",
			"postgres-ca":  "lockworker-postgres-ca",
		} {
			v, ok := volumes[name]
			if assert.True(t, ok, "no volume %s", name) {
				assert.Equal(t, secretName, v.Secret.SecretName, "volume %s", name)
				assert.True(t, v.Secret.Optional, "volume %s: Secret %s must be optional", name, secretName)
			}
		}
		mounted := map[string]string{}
		var mountedNames []string
		for _, m := range c.VolumeMounts {
			assert.Contains(t, volumes, m.Name, "volumeMount %s names no volume", m.Name)
			assert.True(t, m.ReadOnly, "volumeMount %s must be readOnly", m.Name)
			assert.NotContains(t, mounted, m.MountPath, "two volumeMounts at %s", m.MountPath)
			mounted[m.MountPath] = m.Name
			mountedNames = append(mountedNames, m.Name)
		}
		// ElementsMatch counts duplicates: one volume mounted twice and
		// another not at all fails.
		var volumeNames []string
		for _, v := range d.Template.Spec.Volumes {
			volumeNames = append(volumeNames, v.Name)
		}
		assert.ElementsMatch(t, volumeNames, mountedNames, "every volume mounted once")
		// Every file path the ConfigMap and the example Secret give or
		// suggest (comments included) is under a mount: a TLS or key file
		// setting naming an unmounted path stops lockworker at start.
		pathRE := regexp.MustCompile(`/etc/lockworker/[A-Za-z0-9._/-]*[A-Za-z0-9]`)
		for _, f := range []string{cm.file, secret.file} {
			raw, err := os.ReadFile(filepath.Join(dir, f))
			require.NoError(t, err)
			paths := pathRE.FindAllString(string(raw), -1)
			for _, p := range paths {
				found := false
				for mp := range mounted {
					found = found || p == mp || strings.HasPrefix(p, strings.TrimSuffix(mp, "/")+"/")
				}
				assert.True(t, found, "%s names %s, which no volumeMount provides", f, p)
			}
		}
	})

	t.Run("service", func(t *testing.T) {
		s := decodeSpec[serviceSpec](t, svc)
		assert.True(t, selects(s.Selector, d.Template.Metadata.Labels), "the Service must select the pods")
		require.NotEmpty(t, s.Ports)
		tp := s.Ports[0].TargetPort
		port := httpPort(t, env["HTTP_ADDR"])
		if tp.Tag == "!!int" {
			assert.Equal(t, strconv.Itoa(port), tp.Value)
		} else {
			found := false
			for _, p := range c.Ports {
				found = found || (p.Name == tp.Value && p.ContainerPort == port)
			}
			assert.True(t, found, "targetPort %q must name the containerPort %d", tp.Value, port)
		}
	})

	t.Run("pod disruption budget", func(t *testing.T) {
		p := decodeSpec[pdbSpec](t, pdb)
		assert.True(t, selects(p.Selector.MatchLabels, d.Template.Metadata.Labels), "the PDB must select the pods")
		require.True(t, (p.MinAvailable.Kind == 0) != (p.MaxUnavailable.Kind == 0), "set one of minAvailable, maxUnavailable")
		// Readiness follows PostgreSQL and Kafka: in their outage every pod
		// is unready, and only this lets a drain evict them.
		assert.Equal(t, "AlwaysAllow", p.UnhealthyPodEvictionPolicy)
		// It must let a drain evict at least one pod of three.
		if p.MinAvailable.Kind != 0 {
			n, err := strconv.Atoi(p.MinAvailable.Value)
			require.NoError(t, err, "minAvailable as a number")
			assert.Less(t, n, d.Replicas)
		} else {
			n, err := strconv.Atoi(p.MaxUnavailable.Value)
			require.NoError(t, err, "maxUnavailable as a number")
			assert.GreaterOrEqual(t, n, 1)
			assert.Less(t, n, d.Replicas)
		}
	})
}

// commentProse returns a file's words, lower case, comment markers dropped
// and line breaks made spaces, so a sentence is found however it wraps.
func commentProse(t *testing.T, file string) string {
	t.Helper()
	raw, err := os.ReadFile(file)
	require.NoError(t, err)
	words := slices.DeleteFunc(strings.Fields(strings.ToLower(string(raw))), func(w string) bool { return w == "#" })
	return strings.Join(words, " ")
}

// measuredPeakRSS is the worker's peak RSS under the binary's default soft
// memory limit (after a 100,000-lock cleanup), read from the measured column
// of docs/performance.md's "worker peak RSS" row, so a new measurement there
// is checked against requests.memory here.
func measuredPeakRSS(t *testing.T) int64 {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(root, "docs", "performance.md"))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^\| worker peak RSS \|[^|\n]*\|[^|\n]*\| (\d+) MiB\b`).FindSubmatch(doc)
	require.NotNil(t, m, "docs/performance.md: no `| worker peak RSS | ... | N MiB ...` row; update measuredPeakRSS")
	n, err := strconv.ParseInt(string(m[1]), 10, 64)
	require.NoError(t, err)
	return n << 20
}

// binaryMemoryLimit is cmd/lockworker's memoryLimit, the soft memory limit
// it sets when GOMEMLIMIT is not.
func binaryMemoryLimit(t *testing.T) int64 {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(root, "cmd", "lockworker", "main.go"))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^const memoryLimit = (\d+) << 20$`).FindSubmatch(src)
	require.NotNil(t, m, "cmd/lockworker/main.go: no `const memoryLimit = N << 20`; update binaryMemoryLimit")
	n, err := strconv.ParseInt(string(m[1]), 10, 64)
	require.NoError(t, err)
	return n << 20
}

// binaryStopDeadline is cmd/lockworker's stopDeadline: how long its stop
// (the drain and Close) may last after SIGTERM before it exits 1. A grace
// period shorter would SIGKILL it first, without its line saying why.
func binaryStopDeadline(t *testing.T) time.Duration {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(root, "cmd", "lockworker", "main.go"))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^const stopDeadline = (\d+) \* time\.Second$`).FindSubmatch(src)
	require.NotNil(t, m, "cmd/lockworker/main.go: no `const stopDeadline = N * time.Second`; update binaryStopDeadline")
	n, err := strconv.Atoi(string(m[1]))
	require.NoError(t, err)
	return time.Duration(n) * time.Second
}

// memQuantity reads a memory size as Kubernetes (Mi, Gi) or GOMEMLIMIT
// (MiB, GiB) writes it, in bytes.
func memQuantity(t *testing.T, q string) int64 {
	t.Helper()
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"Gi", 30}, {"Mi", 20}, {"Ki", 10}} {
		if v, ok := strings.CutSuffix(q, u.suffix); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(t, err, "memory quantity %q", q)
			return n << u.shift
		}
	}
	n, err := strconv.ParseInt(q, 10, 64)
	require.NoError(t, err, "memory quantity %q: use Mi or Gi", q)
	return n
}

func maps(m map[string]int) []int {
	var out []int
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// ------------------------------------------------------------------- compose

func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	abs, err := filepath.Abs(root)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// No environment: every ${VAR:-default} takes its default, as on a
	// machine with nothing set. Validation against the compose schema is on.
	p, err := loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  abs,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(abs, "docker-compose.yml")}},
		Environment: types.Mapping{},
	})
	require.NoError(t, err, "docker-compose.yml does not load (schema or interpolation)")
	return p
}

func composeEnv(t *testing.T, s types.ServiceConfig) map[string]string {
	t.Helper()
	env := map[string]string{}
	for k, v := range s.Environment {
		require.NotNil(t, v, "service %s: %s has no value", s.Name, k)
		env[k] = *v
	}
	return env
}

func TestCompose(t *testing.T) {
	p := loadCompose(t)
	absRoot, err := filepath.Abs(root)
	require.NoError(t, err)

	for _, name := range []string{"kafka", "kafka-init", "postgres"} {
		require.Contains(t, p.Services, name)
	}
	var replicas []types.ServiceConfig
	for _, s := range p.Services {
		if s.Build != nil {
			replicas = append(replicas, s)
		}
	}
	sort.Slice(replicas, func(i, j int) bool { return replicas[i].Name < replicas[j].Name })
	require.Len(t, replicas, 2, "two lockworker replicas built from the Dockerfile")

	kafka, initSvc, pg := p.Services["kafka"], p.Services["kafka-init"], p.Services["postgres"]
	for _, s := range []types.ServiceConfig{kafka, pg, replicas[0], replicas[1]} {
		require.NotNil(t, s.HealthCheck, "service %s needs a healthcheck", s.Name)
		assert.False(t, s.HealthCheck.Disable, s.Name)
		assert.NotEmpty(t, s.HealthCheck.Test, s.Name)
	}

	kenv := composeEnv(t, kafka)
	t.Run("kafka in KRaft mode", func(t *testing.T) {
		assert.True(t, strings.HasPrefix(kafka.Image, "apache/kafka:"), kafka.Image)
		assert.Contains(t, strings.Split(kenv["KAFKA_PROCESS_ROLES"], ","), "controller")
		assert.Contains(t, strings.Split(kenv["KAFKA_PROCESS_ROLES"], ","), "broker")
		assert.NotEmpty(t, kenv["KAFKA_NODE_ID"])
		assert.Regexp(t, `^`+kenv["KAFKA_NODE_ID"]+`@kafka:\d+$`, kenv["KAFKA_CONTROLLER_QUORUM_VOTERS"])
		for k := range kenv {
			assert.NotContains(t, k, "ZOOKEEPER")
		}
		id, err := base64.RawURLEncoding.DecodeString(kenv["CLUSTER_ID"])
		assert.NoError(t, err, "CLUSTER_ID must be base64url (kafka-storage.sh random-uuid)")
		assert.Len(t, id, 16, "CLUSTER_ID must encode 16 bytes")
		// Every listener has a protocol; the controller listener is one.
		protos := map[string]bool{}
		for _, kv := range strings.Split(kenv["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"], ",") {
			protos[strings.SplitN(kv, ":", 2)[0]] = true
		}
		for _, l := range strings.Split(kenv["KAFKA_LISTENERS"]+","+kenv["KAFKA_ADVERTISED_LISTENERS"], ",") {
			assert.True(t, protos[strings.SplitN(l, ":", 2)[0]], "listener %s has no security protocol", l)
		}
		assert.True(t, protos[kenv["KAFKA_CONTROLLER_LISTENER_NAMES"]])
	})

	for i, s := range replicas {
		env := composeEnv(t, s)
		t.Run(s.Name, func(t *testing.T) {
			assert.Equal(t, absRoot, filepath.Clean(s.Build.Context), "build context is the repository")
			assert.Equal(t, "Dockerfile", s.Build.Dockerfile)
			cfg := checkEnv(t, "docker-compose.yml service "+s.Name, env)

			// Reaches the broker and the database of this file.
			require.Len(t, cfg.Kafka.BootstrapServers, 1)
			assert.Contains(t, strings.Split(kenv["KAFKA_ADVERTISED_LISTENERS"], ","), "PLAINTEXT://"+cfg.Kafka.BootstrapServers[0],
				"KAFKA_BOOTSTRAP_SERVERS must be a listener kafka advertises")
			penv := composeEnv(t, pg)
			assert.Equal(t, "postgres", cfg.Postgres.Host)
			assert.Equal(t, penv["POSTGRES_DB"], cfg.Postgres.Database)
			assert.Equal(t, penv["POSTGRES_USER"], cfg.Postgres.User)
			assert.Equal(t, penv["POSTGRES_PASSWORD"], cfg.Postgres.Password)

			assert.Equal(t, "service_healthy", s.DependsOn["postgres"].Condition)
			assert.Equal(t, "service_completed_successfully", s.DependsOn["kafka-init"].Condition)
			if d, ok := s.DependsOn["kafka"]; ok {
				assert.Equal(t, "service_healthy", d.Condition)
			}

			assert.Equal(t, types.HealthCheckTest{"CMD", "/usr/local/bin/healthcheck"}, s.HealthCheck.Test,
				"the image has no shell: run the healthcheck binary")
			port := httpPort(t, cfg.HTTPAddr)
			require.Len(t, s.Ports, 1)
			assert.Equal(t, uint32(port), s.Ports[0].Target, "the published port must be HTTP_ADDR's")
			require.NotNil(t, s.StopGracePeriod, "stop_grace_period: Docker's 10 s default cuts the drain short")
			assert.Greater(t, time.Duration(*s.StopGracePeriod), binaryStopDeadline(t), "stop_grace_period must outlast the stop")

			if i == 1 {
				other := composeEnv(t, replicas[0])
				assert.NotEqual(t, other["INSTANCE_ID"], env["INSTANCE_ID"], "replicas need distinct INSTANCE_IDs")
				assert.NotEqual(t, replicas[0].Ports[0].Published, s.Ports[0].Published, "replicas need distinct host ports")
				assert.Equal(t, other["KAFKA_CONSUMER_GROUP"], env["KAFKA_CONSUMER_GROUP"], "replicas share one consumer group")
			}
		})
	}

	t.Run("topic creation", func(t *testing.T) {
		assert.Equal(t, "service_healthy", initSvc.DependsOn["kafka"].Condition)
		assert.Equal(t, "no", initSvc.Restart)
		script := strings.Join(append(append([]string{}, initSvc.Entrypoint...), initSvc.Command...), " ")
		cfg := checkEnv(t, "docker-compose.yml service "+replicas[0].Name, composeEnv(t, replicas[0]))
		// Each topic's create command: its own line, or the loop's over
		// several (for t in a b; do ... --topic "$t" ...).
		creates := map[string]string{}
		var loop []string
		topicArg := regexp.MustCompile(`--topic "?([^\s"]+)"?`)
		for _, line := range strings.Split(script, "\n") {
			line = strings.TrimSpace(line)
			if rest, ok := strings.CutPrefix(line, "for t in "); ok {
				loop = strings.Fields(strings.SplitN(rest, ";", 2)[0])
				continue
			}
			m := topicArg.FindStringSubmatch(line)
			if !strings.Contains(line, "--create") || m == nil {
				continue
			}
			if strings.TrimLeft(m[1], "$") == "t" {
				for _, topic := range loop {
					creates[topic] = line
				}
				continue
			}
			creates[m[1]] = line
		}
		// As the worker would create them, configs included (the lock
		// state topic's compaction).
		for _, spec := range worker.Topics(cfg.Topics.Names(), cfg.Topics.CommandsPartitions) {
			line, ok := creates[spec.Name]
			if !assert.True(t, ok, "kafka-init must create %s", spec.Name) {
				continue
			}
			assert.Regexp(t, `--partitions `+strconv.Itoa(int(spec.Partitions))+`\b`, line, "%s's partitions", spec.Name)
			for k, v := range spec.Configs {
				assert.Contains(t, line, "--config "+k+"="+v, "%s's %s", spec.Name, k)
			}
		}
		assert.Contains(t, script, "--bootstrap-server kafka:9092")
	})
}

// ---------------------------------------------------------------- Dockerfile

// dockerfileLines returns the instructions of a Dockerfile, continuation
// lines joined and comments dropped.
func dockerfileLines(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	require.NoError(t, err)
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(string(raw), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		out = append(out, cur.String())
		cur.Reset()
	}
	require.Zero(t, cur.Len(), "Dockerfile ends inside a continued line")
	return out
}

// shellWords splits a command line the way sh would for the simple quoting
// the Dockerfile uses (double and single quotes, no escapes inside them).
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

type dockerfile struct {
	stages    [][]string // instructions per stage, FROM first
	buildArgs []string   // what follows "go build" in the builder, unexpanded
	buildEnv  map[string]string
	stageArgs map[string]string // the builder's ARGs: name to default ("" without one)
}

func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	var df dockerfile
	df.buildEnv = map[string]string{}
	df.stageArgs = map[string]string{}
	for _, l := range dockerfileLines(t) {
		instr := strings.ToUpper(strings.Fields(l)[0])
		if instr == "FROM" {
			df.stages = append(df.stages, nil)
		}
		if len(df.stages) == 0 {
			require.Contains(t, []string{"ARG"}, instr, "only ARG may come before the first FROM: %s", l)
			continue
		}
		df.stages[len(df.stages)-1] = append(df.stages[len(df.stages)-1], l)
		if len(df.stages) == 1 && instr == "ENV" {
			for _, kv := range shellWords(strings.TrimSpace(l[3:])) {
				k, v, ok := strings.Cut(kv, "=")
				require.True(t, ok, "ENV %q: use key=value", kv)
				df.buildEnv[k] = v
			}
		}
		if len(df.stages) == 1 && instr == "ARG" {
			for _, kv := range shellWords(strings.TrimSpace(l[3:])) {
				k, v, _ := strings.Cut(kv, "=")
				df.stageArgs[k] = v
			}
		}
		if instr == "RUN" && strings.Contains(l, "go build") {
			require.Nil(t, df.buildArgs, "more than one go build line")
			_, after, _ := strings.Cut(l, "go build")
			df.buildArgs = shellWords(after)
		}
	}
	require.Len(t, df.stages, 2, "a build stage and a final stage")
	require.NotNil(t, df.buildArgs, "no RUN ... go build line")
	return df
}

// goBuildArgs returns the go build line's arguments with its variables
// substituted as the RUN's shell would: an ARG of the builder takes its
// value from given (docker build --build-arg) or its default, and an ENV
// overrides an ARG of its name. A variable neither declares fails the test
// rather than become the shell's empty string: a misspelt name would
// stamp nothing.
func (df dockerfile) goBuildArgs(t *testing.T, given map[string]string) []string {
	t.Helper()
	vars := map[string]string{}
	for k, def := range df.stageArgs {
		vars[k] = def
		if v, ok := given[k]; ok {
			vars[k] = v
		}
	}
	for k, v := range df.buildEnv {
		vars[k] = v
	}
	args := make([]string, len(df.buildArgs))
	for i, a := range df.buildArgs {
		args[i] = os.Expand(a, func(k string) string {
			v, ok := vars[k]
			assert.True(t, ok, "the go build line uses $%s, which no ARG or ENV of the build stage declares", k)
			return v
		})
	}
	return args
}

// imageHealthcheck returns the command of a HEALTHCHECK instruction's
// arguments, which must be in exec form (the image has no shell).
func imageHealthcheck(t *testing.T, instr string) []string {
	t.Helper()
	_, cmd, ok := strings.Cut(instr, "CMD ")
	require.True(t, ok, "HEALTHCHECK without CMD: %s", instr)
	var args []string
	require.NoError(t, json.Unmarshal([]byte(cmd), &args), "HEALTHCHECK CMD must be exec form (a JSON array): %s", cmd)
	require.NotEmpty(t, args)
	return args
}

// mainPackages are the commands under cmd/, as ./cmd/... builds them.
func mainPackages(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-e", "-f", `{{if eq .Name "main"}}{{.ImportPath}}{{end}}`, filepath.Join(root, "cmd")+"/...").Output()
	require.NoError(t, err, "go list ./cmd/...")
	var names []string
	for _, l := range strings.Fields(string(out)) {
		names = append(names, l[strings.LastIndex(l, "/")+1:])
	}
	require.Contains(t, names, "lockworker")
	require.Contains(t, names, "healthcheck")
	return names
}

func TestDockerfile(t *testing.T) {
	df := parseDockerfile(t)
	build, final := df.stages[0], df.stages[1]
	lines := dockerfileLines(t)

	t.Run("builder", func(t *testing.T) {
		from := shellWords(build[0])
		image := from[len(from)-3]
		require.Equal(t, "AS", strings.ToUpper(from[len(from)-2]), "name the build stage: %s", build[0])
		// golang:${GO_VERSION} with ARG GO_VERSION=<go.mod's go version>.
		var goVersion string
		for _, l := range lines {
			if v, ok := strings.CutPrefix(l, "ARG GO_VERSION="); ok {
				goVersion = v
			}
		}
		image = strings.ReplaceAll(image, "${GO_VERSION}", goVersion)
		require.True(t, strings.HasPrefix(image, "golang:"), "builder image %s", image)
		mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
		require.NoError(t, err)
		m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(mod)
		require.NotNil(t, m, "go directive in go.mod")
		assert.True(t, strings.HasPrefix(strings.TrimPrefix(image, "golang:"), string(m[1])),
			"builder %s must be Go %s, as go.mod says", image, m[1])
		assert.Equal(t, "0", df.buildEnv["CGO_ENABLED"], "CGO_ENABLED=0 for a static binary")
		assert.Contains(t, df.buildArgs, "-trimpath")
		i := slices.Index(df.buildArgs, "-ldflags")
		require.GreaterOrEqual(t, i, 0, "-ldflags")
		assert.Subset(t, strings.Fields(df.buildArgs[i+1]), []string{"-s", "-w"})
		assert.Equal(t, "./cmd/...", df.buildArgs[len(df.buildArgs)-1], "the image carries every command")
	})

	t.Run("final image", func(t *testing.T) {
		from := shellWords(final[0])
		image := from[len(from)-1]
		assert.True(t, image == "scratch" || (strings.HasPrefix(image, "gcr.io/distroless/static") && strings.HasSuffix(image, ":nonroot")),
			"final image %s: distroless static nonroot or scratch", image)
		var user, entrypoint, healthcheck string
		var exposed []string
		for _, l := range final {
			instr, rest, _ := strings.Cut(l, " ")
			switch strings.ToUpper(instr) {
			case "USER":
				user = rest
			case "EXPOSE":
				exposed = append(exposed, strings.Fields(rest)...)
			case "ENTRYPOINT":
				entrypoint = rest
			case "HEALTHCHECK":
				healthcheck = rest
			case "RUN":
				t.Errorf("the final stage has no shell to RUN with: %s", l)
			}
		}
		uid, _, _ := strings.Cut(user, ":")
		assert.NotEmpty(t, uid, "USER")
		assert.NotContains(t, []string{"0", "root"}, uid, "USER must not be root")
		port := httpPort(t, config.Default().HTTPAddr)
		assert.Contains(t, exposed, strconv.Itoa(port), "EXPOSE HTTP_ADDR's default port")
		assert.Equal(t, `["/usr/local/bin/lockworker"]`, entrypoint)
		hc := imageHealthcheck(t, healthcheck)
		assert.Equal(t, "/usr/local/bin/healthcheck", hc[0], "HEALTHCHECK runs the healthcheck binary")
		// Liveness: /health is 503 in a PostgreSQL or Kafka outage and
		// during migrations, and a runtime acting on HEALTHCHECK (Swarm)
		// would restart every replica. A path, not a URL: healthcheck asks
		// it on HTTP_ADDR's port, so the check follows HTTP_ADDR.
		assert.Equal(t, []string{"/usr/local/bin/healthcheck", "/health/live"}, hc,
			"the image's HEALTHCHECK must ask liveness (without an argument healthcheck asks /health), as a path on HTTP_ADDR's port")
		assert.Contains(t, final, "COPY --from=build /out/ /usr/local/bin/")
		for _, w := range shellWords(build[len(build)-1]) {
			if w == "-o" {
				assert.Contains(t, build[len(build)-1], "-o /out/ ", "binaries go to /out/, which the final stage copies")
			}
		}
	})

	t.Run("dockerignore", func(t *testing.T) {
		raw, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
		require.NoError(t, err)
		var patterns []string
		for _, l := range strings.Split(string(raw), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				patterns = append(patterns, l)
			}
		}
		for _, p := range []string{".git", ".data/kafka/x"} {
			assert.True(t, dockerIgnored(patterns, p), ".dockerignore must exclude %s", p)
		}
		// Every file the build reads stays in the context.
		out, err := exec.Command("go", "list", "-deps", "-f",
			`{{if .Module}}{{if .Module.Main}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{range .EmbedFiles}} {{.}}{{end}}{{end}}{{end}}`,
			filepath.Join(root, "cmd")+"/...").Output()
		require.NoError(t, err)
		absRoot, err := filepath.Abs(root)
		require.NoError(t, err)
		needed := []string{"go.mod", "go.sum"}
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(l)
			rel, err := filepath.Rel(absRoot, f[0])
			require.NoError(t, err)
			for _, name := range f[1:] {
				needed = append(needed, filepath.ToSlash(filepath.Join(rel, name)))
			}
		}
		require.Greater(t, len(needed), 10)
		for _, f := range needed {
			assert.False(t, dockerIgnored(patterns, f), ".dockerignore excludes %s, which the build needs", f)
		}
	})
}

// dockerIgnored applies .dockerignore rules to a slash-separated path: the
// last matching pattern wins, "!" re-includes, a pattern matching a parent
// directory excludes what is inside, "**" spans directories.
func dockerIgnored(patterns []string, p string) bool {
	ignored := false
	for _, pat := range patterns {
		neg := strings.HasPrefix(pat, "!")
		pat = strings.TrimPrefix(strings.TrimPrefix(pat, "!"), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(pat); i++ {
			switch c := pat[i]; {
			case c == '*' && i+1 < len(pat) && pat[i+1] == '*':
				re.WriteString(".*")
				i++
				if i+1 < len(pat) && pat[i+1] == '/' {
					re.WriteString("/?")
					i++
				}
			case c == '*':
				re.WriteString("[^/]*")
			case c == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString("(/.*)?$")
		if regexp.MustCompile(re.String()).MatchString(p) {
			ignored = !neg
		}
	}
	return ignored
}

func TestDockerignoreMatcher(t *testing.T) {
	pats := []string{".git", "**/*.test", "*.md", "!README.md", "docs/**/x"}
	for p, want := range map[string]bool{
		".git": true, ".git/HEAD": true, ".gitignore": false, "a/b.test": true, "b.test": true,
		"NOTES.md": true, "README.md": false, "cmd/x.md": false, "docs/a/b/x": true, "docs/x": true, "main.go": false,
	} {
		assert.Equal(t, want, dockerIgnored(pats, p), p)
	}
}

// TestDockerBuildFlags builds ./cmd/... exactly as the Dockerfile does (its
// go build arguments and build ENV, read from it, with a REVISION build
// argument) and checks the binaries are static, stripped, path-free, and
// run, and that lockworker reports the revision it was given.
func TestDockerBuildFlags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every command (-short)")
	}
	df := parseDockerfile(t)
	// As `docker build --build-arg REVISION=$(git rev-parse HEAD)` passes it.
	const revision = "0123456789abcdef0123456789abcdef01234567"
	buildArgs := df.goBuildArgs(t, map[string]string{"REVISION": revision})
	out := t.TempDir()
	args := []string{"build"}
	for i := 0; i < len(buildArgs); i++ {
		a := buildArgs[i]
		if a == "-o" {
			args = append(args, "-o", out+string(os.PathSeparator))
			i++
			continue
		}
		args = append(args, a)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = os.Environ()
	for k, v := range df.buildEnv {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	// The Dockerfile sets GOOS/GOARCH from the target platform: linux here.
	cmd.Env = append(cmd.Env, "GOOS=linux", "GOARCH="+runtime.GOARCH)
	msg, err := cmd.CombinedOutput()
	require.NoError(t, err, "go %s:\n%s", strings.Join(args, " "), msg)

	absRoot, err := filepath.Abs(root)
	require.NoError(t, err)
	for _, name := range mainPackages(t) {
		t.Run(name, func(t *testing.T) {
			bin := filepath.Join(out, name)
			f, err := elf.Open(bin)
			require.NoError(t, err, "%s is not an ELF binary", name)
			defer f.Close()
			for _, p := range f.Progs {
				assert.NotEqual(t, elf.PT_INTERP, p.Type, "%s has a dynamic loader (PT_INTERP): not static", name)
				assert.NotEqual(t, elf.PT_DYNAMIC, p.Type, "%s has a dynamic section", name)
			}
			libs, err := f.ImportedLibraries()
			require.NoError(t, err)
			assert.Empty(t, libs, "%s links shared libraries", name)
			assert.True(t, f.Section(".symtab") == nil, "%s keeps its symbol table: -ldflags -s missing", name)
			assert.True(t, f.Section(".debug_info") == nil, "%s keeps DWARF: -ldflags -w missing", name)
			data, err := os.ReadFile(bin)
			require.NoError(t, err)
			assert.False(t, bytes.Contains(data, []byte(absRoot+"/")), "%s holds the build directory %s: -trimpath missing", name, absRoot)
		})
	}
	if runtime.GOOS != "linux" {
		t.Skipf("the binaries are linux/%s; not running them on %s", runtime.GOARCH, runtime.GOOS)
	}

	t.Run("lockworker runs", func(t *testing.T) {
		// A bad setting stops it in ParseEnv: proof it starts, without
		// needing Kafka or PostgreSQL.
		c := exec.Command(filepath.Join(out, "lockworker"))
		c.Env = []string{"LOG_FORMAT=xml"}
		msg, err := c.CombinedOutput()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, "%s", msg)
		assert.Equal(t, 2, exit.ExitCode(), "%s", msg)
		assert.Contains(t, string(msg), `LOG_FORMAT: "xml" is not json or console`)
	})

	t.Run("lockworker reports its revision", func(t *testing.T) {
		// A Kafka CA file that cannot be opened stops Run (exit 2) after
		// its start line, which carries the revision, and before it dials
		// Kafka or PostgreSQL: their addresses here are never reached.
		c := exec.Command(filepath.Join(out, "lockworker"))
		c.Env = []string{
			"LOG_FORMAT=json", "HTTP_ADDR=127.0.0.1:0",
			"KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:1", "DATABASE_URL=postgres://lockworker@127.0.0.1:1/lockworker",
			"KAFKA_TLS_ENABLED=true", "KAFKA_TLS_CA_FILE=" + filepath.Join(t.TempDir(), "missing.pem"),
		}
		msg, err := c.CombinedOutput()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, "%s", msg)
		require.Equal(t, 2, exit.ExitCode(), "%s", msg)
		for l := range bytes.Lines(msg) {
			var line struct{ Message, Revision string }
			if json.Unmarshal(l, &line) == nil && line.Message == "starting lockworker" {
				assert.Equal(t, revision, line.Revision, "the start line's revision")
				return
			}
		}
		t.Fatalf("no start line:\n%s", msg)
	})

	t.Run("healthcheck runs", func(t *testing.T) {
		// /health/live follows alive, /health follows ready, anything else
		// is 404: each run must ask the path it is meant to.
		var alive, ready atomic.Bool
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var ok bool
			switch r.URL.Path {
			case "/health/live":
				ok = alive.Load()
			case "/health":
				ok = ready.Load()
			default:
				http.NotFound(w, r)
				return
			}
			if !ok {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		}))
		defer srv.Close()
		_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
		require.NoError(t, err)

		var instr string
		for _, l := range df.stages[1] {
			if rest, ok := strings.CutPrefix(l, "HEALTHCHECK "); ok {
				instr = rest
			}
		}
		hc := imageHealthcheck(t, instr)
		run := func(args ...string) error {
			// HTTP_ADDR, not the command, puts the check on the test
			// server's port, as it would in the container.
			c := exec.Command(filepath.Join(out, filepath.Base(args[0])), args[1:]...)
			c.Env = []string{"HTTP_ADDR=:" + port}
			return c.Run()
		}
		readiness := []string{"/usr/local/bin/healthcheck"} // compose's check
		exitCode := func(args []string) int {
			err := run(args...)
			if exit, ok := errors.AsType[*exec.ExitError](err); ok {
				return exit.ExitCode()
			}
			require.NoError(t, err)
			return 0
		}
		want := func(ok bool) int {
			if ok {
				return 0
			}
			return 1
		}
		// Live and ready; live but not ready (PostgreSQL down: the image's
		// HEALTHCHECK passes, compose's readiness check fails); neither.
		for _, s := range []struct{ alive, ready bool }{{true, true}, {true, false}, {false, false}} {
			alive.Store(s.alive)
			ready.Store(s.ready)
			assert.Equal(t, want(s.alive), exitCode(hc), "the image's HEALTHCHECK (/health/live), live %v", s.alive)
			assert.Equal(t, want(s.ready), exitCode(readiness), "healthcheck without an argument (/health), ready %v", s.ready)
		}
	})
}
