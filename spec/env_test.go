package spec

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestValidateEnvName(t *testing.T) {
	for _, ok := range []string{"A", "_", "a_b", "PATH", "X1", "npm_config_cache"} {
		if err := ValidateEnvName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "1A", "A=B", "A\x00B", "A B", "A-B", "é", "A.B"} {
		if err := ValidateEnvName(bad); !errors.Is(err, ErrInvalidEnv) {
			t.Errorf("%q accepted (err %v)", bad, err)
		}
	}
}

func TestValidateEnvValueNamesNoValue(t *testing.T) {
	err := ValidateEnvValue("TOKEN", []byte("s3cr3t\x00tail"))
	if !errors.Is(err, ErrInvalidEnv) || strings.Contains(err.Error(), "s3cr3t") || !strings.Contains(err.Error(), "TOKEN") {
		t.Fatalf("NUL value: %v", err)
	}
	big := make([]byte, MaxEnvString)
	for i := range big {
		big[i] = 'x'
	}
	if err := ValidateEnvValue("BIG", big); !errors.Is(err, ErrInvalidEnv) || strings.Contains(err.Error(), "xxxx") {
		t.Fatalf("oversized value: %v", err)
	}
	if err := ValidateEnvValue("OK", big[:MaxEnvString-3]); err != nil {
		t.Fatalf("largest value refused: %v", err)
	}
}

func TestSecretLooking(t *testing.T) {
	for _, k := range []string{"AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "PGPASSWORD", "DB_PASS", "SESSION_ID", "api_key", "APIKEY", "PRIVATE_KEY_PEM", "NPM_AUTH", "MY_COOKIE", "DB_PASSWD", "GOOGLE_APPLICATION_CREDENTIALS"} {
		if !SecretLooking(k) {
			t.Errorf("%s not secret-looking", k)
		}
	}
	for _, k := range []string{"PATH", "HOME", "LANG", "PWD", "NODE_ENV", "DEBUG", "PORT", "KEYBOARD", "TERM"} {
		if SecretLooking(k) {
			t.Errorf("%s secret-looking", k)
		}
	}
}

func TestSecureExecEnv(t *testing.T) {
	image := []string{"PATH=/bin", "HOME=/home/u", "LD_PRELOAD=/tmp/evil.so", "PYTHONUNBUFFERED=1"}
	sandbox := []string{"HOME=/work", "PYTHONSTARTUP=/tmp/x.py", "BASH_ENV=/tmp/rc", "NODE_OPTIONS=--require /tmp/x", "REGION=eu", "GIT_CONFIG_COUNT=1", "TOKEN=set-by-sandbox"}
	got := SecureExecEnv(image, sandbox, []string{"TOKEN"})
	want := []string{"PATH=/bin", "HOME=/work", "PYTHONUNBUFFERED=1", "REGION=eu"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestMergeEnv(t *testing.T) {
	got := MergeEnv([]string{"A=1", "B=2"}, []string{"B=3", "C=4"}, []string{"A=5"})
	if want := []string{"A=5", "B=3", "C=4"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}
