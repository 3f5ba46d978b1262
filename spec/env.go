package spec

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// EnvVar is one variable of an execSecure call's env: its value is a
// secret, kept in bytes so that the shim can clear it once the command has
// it, and never turned into a string.
type EnvVar struct {
	Name  string
	Value []byte
}

// Clear overwrites every value of vars.
func Clear(vars []EnvVar) {
	for _, v := range vars {
		clear(v.Value)
	}
}

// MaxEnvString is the most one NAME=value may take: the kernel refuses an
// exec with a longer string (MAX_ARG_STRLEN, 32 pages) with E2BIG.
const MaxEnvString = 32*4096 - 1

// ErrInvalidEnv is wrapped by every refusal of an env name or value.
var ErrInvalidEnv = errors.New("invalid env")

// ValidateEnvName accepts the portable names POSIX shells accept:
// [A-Za-z_][A-Za-z0-9_]*. A name with '=' or NUL would change what the
// command sees, and a shell drops names it cannot parse.
func ValidateEnvName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty name", ErrInvalidEnv)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			return fmt.Errorf("%w: name %q: only letters, digits and _ are allowed, not starting with a digit", ErrInvalidEnv, name)
		}
	}
	return nil
}

// ValidateEnvValue refuses a value that no exec could carry. The error
// names the variable, never its value.
func ValidateEnvValue(name string, value []byte) error {
	if bytes.IndexByte(value, 0) >= 0 {
		return fmt.Errorf("%w: value of %s contains a NUL byte", ErrInvalidEnv, name)
	}
	if n := len(name) + 1 + len(value); n > MaxEnvString {
		return fmt.Errorf("%w: %s takes %d bytes, more than the %d the kernel allows one env string", ErrInvalidEnv, name, n, MaxEnvString)
	}
	return nil
}

// ValidateEnv checks a name and its value.
func ValidateEnv(name string, value []byte) error {
	if err := ValidateEnvName(name); err != nil {
		return err
	}
	return ValidateEnvValue(name, value)
}

// secretWords mark a key that looks like it holds a credential.
var secretWords = []string{
	"KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "PWD", "PASS", "CREDENTIAL", "CREDS", "PRIVATE",
	"AUTH", "COOKIE", "SESSION", "CERT", "SIGNATURE", "DSN", "ACCESS",
}

// notSecret are common keys that match a secret word but hold none.
var notSecret = []string{"PWD", "OLDPWD", "KEYBOARD", "XAUTHORITY", "SSH_AUTH_SOCK", "PASSWORD_STORE_DIR"}

// SecretLooking tells whether a key looks like it names a secret: one of
// its _-separated words (or the whole key) is a secret word, as in
// AWS_SECRET_ACCESS_KEY, GITHUB_TOKEN, PGPASSWORD, DB_PASS, SESSION_ID.
func SecretLooking(name string) bool {
	upper := strings.ToUpper(name)
	if slices.Contains(notSecret, upper) {
		return false
	}
	for _, word := range strings.FieldsFunc(upper, func(r rune) bool { return r == '_' || r == '-' || r == '.' }) {
		for _, s := range secretWords {
			// PGPASSWORD, APIKEY, MYTOKEN, TOKENS: a word that ends with one,
			// or starts with a long one.
			if strings.HasSuffix(word, s) || (len(s) >= 4 && strings.HasPrefix(word, s)) {
				return true
			}
		}
	}
	return false
}

// hookPrefixes and hookNames are variables that make a loader or an
// interpreter run code of someone else's choosing before the command's
// own: planted by user code, they would run inside a secure exec.
var (
	hookPrefixes = []string{"LD_", "GIT_CONFIG_", "PYTHON", "NODE_", "PERL5", "PERL_", "RUBY", "GCONV_", "MALLOC_"}
	hookNames    = []string{"BASH_ENV", "ENV", "PROMPT_COMMAND", "PS4", "SHELLOPTS", "BASHOPTS", "IFS", "CDPATH", "GLOBIGNORE", "NPM_CONFIG_USERCONFIG", "GIT_CONFIG", "GIT_EXEC_PATH", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_ASKPASS", "SSH_ASKPASS", "EDITOR", "VISUAL", "PAGER", "LESSOPEN", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "HOSTALIASES", "RESOLV_HOST_CONF", "LOCALDOMAIN", "TMPDIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"}
	// keptHookNames are matched by hookPrefixes but only name a place or
	// a mode, not code: PYTHONUNBUFFERED, PYTHONDONTWRITEBYTECODE.
	keptHookNames = []string{"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING", "PYTHONUTF8", "NODE_ENV"}
)

// HookVariable tells whether a variable can make a loader, shell or
// interpreter run other code than the command's (LD_PRELOAD, PYTHONPATH,
// PYTHONSTARTUP, PYTHONHOME, BASH_ENV, ENV, NODE_OPTIONS, PERL5OPT,
// RUBYOPT, GIT_CONFIG_*, ...).
func HookVariable(name string) bool {
	if slices.Contains(keptHookNames, name) {
		return false
	}
	if slices.Contains(hookNames, name) {
		return true
	}
	return slices.ContainsFunc(hookPrefixes, func(p string) bool { return strings.HasPrefix(name, p) })
}

// envKey is the name of a NAME=value entry.
func envKey(e string) string {
	k, _, _ := strings.Cut(e, "=")
	return k
}

// MergeEnv lays env lists over each other: an entry of a later list
// replaces the entry with its key in an earlier one, in place; new keys
// are appended in order.
func MergeEnv(layers ...[]string) []string {
	var out []string
	at := map[string]int{}
	for _, layer := range layers {
		for _, e := range layer {
			k := envKey(e)
			if i, ok := at[k]; ok {
				out[i] = e
				continue
			}
			at[k] = len(out)
			out = append(out, e)
		}
	}
	return out
}

// SecureExecEnv is the env an execSecure command gets besides its call's
// own variables (secrets, appended by the request's encoder): the image's
// env as any exec gets it, then the sandbox's env vars, without the
// loader and interpreter hooks (HookVariable) and without the keys the
// call sets itself. A hook variable reaches the command only from the
// call's own env.
func SecureExecEnv(image, sandbox []string, callKeys []string) []string {
	merged := MergeEnv(image, sandbox)
	return slices.DeleteFunc(merged, func(e string) bool {
		k := envKey(e)
		return HookVariable(k) || slices.Contains(callKeys, k)
	})
}
