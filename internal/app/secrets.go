package app

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/moorage/moorage/internal/fsutil"
	"github.com/moorage/moorage/internal/pki"
	"github.com/moorage/moorage/internal/store"
)

// clusterSecrets are what every server of one cluster must hold alike, so
// that one kubeconfig, one joined agent and one service account token work
// against each: the CA, the key that signs service account tokens and the
// admin token.
//
// They are kept in the store, where every server finds them: the first
// server to start writes its own (those in its data directory, made the
// first time), and every later one takes the stored ones and writes them
// into its data directory, replacing its own. Whoever can read the store
// (etcd) can read them, as upstream's Secrets; protect etcd with TLS.
type clusterSecrets struct {
	CA    pki.CA
	SAKey *ecdsa.PrivateKey
	Token string
}

// clusterSecretsKey is the store key of the cluster's secrets, beside the
// API's objects (no resource is stored under /registry/moorage.io/).
const clusterSecretsKey = "/registry/moorage.io/clustersecrets"

// storedSecrets is clusterSecrets in the store: PEM and the token.
type storedSecrets struct {
	CACert            string `json:"caCert"`
	CAKey             string `json:"caKey"`
	ServiceAccountKey string `json:"serviceAccountKey"`
	AdminToken        string `json:"adminToken"`
}

// shareSecrets returns the cluster's secrets: the stored ones if another
// server (or this one, earlier) stored them, else those in dir, which it
// stores. Either way dir then holds them.
func shareSecrets(ctx context.Context, st store.Store, dir string) (clusterSecrets, error) {
	files := pki.Files{Dir: filepath.Join(dir, "tls")}
	tokenFile := filepath.Join(dir, "token")
	kv, err := st.Get(ctx, clusterSecretsKey)
	if errors.Is(err, store.ErrNotFound) {
		local, err := localSecrets(files, tokenFile)
		if err != nil {
			return clusterSecrets{}, err
		}
		value, err := json.Marshal(storedSecrets{
			CACert: string(local.CA.CertPEM), CAKey: string(local.CA.KeyPEM()),
			ServiceAccountKey: string(pki.EncodeKey(local.SAKey)), AdminToken: local.Token,
		})
		if err != nil {
			return clusterSecrets{}, err
		}
		if _, err = st.Create(ctx, clusterSecretsKey, value); err == nil {
			return local, nil
		}
		if !errors.Is(err, store.ErrExists) {
			return clusterSecrets{}, fmt.Errorf("storing the cluster's CA and keys: %w", err)
		}
		// Another server stored its own first: take those.
		kv, err = st.Get(ctx, clusterSecretsKey)
	}
	if err != nil {
		return clusterSecrets{}, fmt.Errorf("reading the cluster's CA and keys from the store: %w", err)
	}
	shared, err := parseSecrets(kv.Value)
	if err != nil {
		return clusterSecrets{}, fmt.Errorf("the cluster's CA and keys in the store (%s): %w", clusterSecretsKey, err)
	}
	if err := pki.WriteCA(files, shared.CA); err != nil {
		return clusterSecrets{}, err
	}
	if err := pki.WriteServiceAccountKey(files, shared.SAKey); err != nil {
		return clusterSecrets{}, err
	}
	if err := writeToken(tokenFile, shared.Token); err != nil {
		return clusterSecrets{}, err
	}
	return shared, nil
}

// localSecrets are the secrets in the data directory, made the first time.
func localSecrets(files pki.Files, tokenFile string) (clusterSecrets, error) {
	ca, err := pki.EnsureCA(files)
	if err != nil {
		return clusterSecrets{}, fmt.Errorf("certificates: %w", err)
	}
	saKey, err := pki.EnsureServiceAccountKey(files)
	if err != nil {
		return clusterSecrets{}, fmt.Errorf("service account key: %w", err)
	}
	token, err := ensureToken(tokenFile)
	if err != nil {
		return clusterSecrets{}, err
	}
	return clusterSecrets{CA: ca, SAKey: saKey, Token: token}, nil
}

func parseSecrets(value []byte) (clusterSecrets, error) {
	var s storedSecrets
	if err := json.Unmarshal(value, &s); err != nil {
		return clusterSecrets{}, err
	}
	ca, err := pki.ParseCA([]byte(s.CACert), []byte(s.CAKey))
	if err != nil {
		return clusterSecrets{}, err
	}
	saKey, err := pki.ParseKey([]byte(s.ServiceAccountKey))
	if err != nil {
		return clusterSecrets{}, fmt.Errorf("service account key: %w", err)
	}
	if s.AdminToken == "" {
		return clusterSecrets{}, errors.New("no admin token")
	}
	return clusterSecrets{CA: ca, SAKey: saKey, Token: s.AdminToken}, nil
}

// writeToken keeps the admin token in path unless it is there already.
func writeToken(path, token string) error {
	if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) == token {
		return nil
	}
	return fsutil.WriteFileAtomic(path, []byte(token+"\n"), 0o600)
}
