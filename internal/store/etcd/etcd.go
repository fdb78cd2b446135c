package etcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/moorage/moorage/internal/store"
)

// Defaults for Config.
const (
	DefaultPrefix      = "/moorage/"
	DefaultDialTimeout = 5 * time.Second
	DefaultWatchBuffer = 1000
)

// Keepalive pings let the client notice a member that stopped answering
// (frozen, or cut off) and move its streams to another one.
const (
	keepaliveTime    = 30 * time.Second
	keepaliveTimeout = 10 * time.Second
)

// revOffset is etcd's revision of an empty store: a new etcd is at revision
// 1 before its first write, and the store contract numbers that write 1.
// Store revisions are etcd's minus revOffset (see the package doc).
const revOffset = 1

func storeRev(etcdRev int64) int64 { return etcdRev - revOffset }
func etcdRev(rev int64) int64      { return rev + revOffset }

// Config says how to reach etcd. Endpoints is required.
type Config struct {
	// Endpoints are the client URLs of the etcd members, e.g.
	// http://127.0.0.1:2379.
	Endpoints []string
	// Prefix is prepended to every key so that one etcd can be shared;
	// default DefaultPrefix. A "/" is appended if it does not end in one.
	Prefix string
	// TLS, if set, is used as is. Otherwise CAFile, CertFile and KeyFile
	// (as kube-apiserver's --etcd-cafile, --etcd-certfile, --etcd-keyfile)
	// build one if any is set.
	TLS                       *tls.Config
	CAFile, CertFile, KeyFile string
	// DialTimeout bounds connecting to the first member; default
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// WatchBuffer is the number of events a watcher may have pending before
	// it is ended with store.ErrSlowConsumer; default DefaultWatchBuffer.
	WatchBuffer int
}

// Store is a store.Store kept in etcd. See the package doc.
type Store struct {
	cli         *clientv3.Client
	prefix      string // of every key; the etcd key prefix itself is the meta key
	watchBuffer int

	// learnedCompact is the highest etcd compaction revision seen in a
	// watch response (a compaction this store did not record).
	learnedCompact atomic.Int64
	// rewatches counts etcd watches reopened after one was lost (tests).
	rewatches atomic.Int64

	closed   atomic.Bool
	mu       sync.Mutex // orders Close against new watches
	ctx      context.Context
	cancel   context.CancelFunc // ends every watch: Close
	watchers sync.WaitGroup
}

var _ store.Store = (*Store)(nil)

// Open connects to etcd and checks that it answers within the dial timeout
// (and ctx).
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	prefix := cfg.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	tlsConfig := cfg.TLS
	if tlsConfig == nil && (cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "") {
		info := transport.TLSInfo{TrustedCAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile}
		var err error
		if tlsConfig, err = info.ClientConfig(); err != nil {
			return nil, fmt.Errorf("etcd: tls: %w", err)
		}
	}
	dialTimeout := cfg.DialTimeout
	if dialTimeout <= 0 {
		dialTimeout = DefaultDialTimeout
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          dialTimeout,
		DialKeepAliveTime:    keepaliveTime,
		DialKeepAliveTimeout: keepaliveTimeout,
		TLS:                  tlsConfig,
		// The client logs each retry at info level as JSON; errors reach
		// the callers anyway, so only its own errors are worth a line.
		LogConfig: quietLog(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: connect to %v: %w", cfg.Endpoints, err)
	}
	s := &Store{cli: cli, prefix: prefix, watchBuffer: cfg.WatchBuffer}
	if s.watchBuffer <= 0 {
		s.watchBuffer = DefaultWatchBuffer
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	// The client connects lazily; a first read tells now whether etcd
	// answers (with a leader) instead of at the first request.
	checkCtx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	if _, err := s.CurrentRevision(checkCtx); err != nil {
		s.cancel()
		cli.Close()
		return nil, fmt.Errorf("etcd: %v does not answer: %w", cfg.Endpoints, err)
	}
	return s, nil
}

// quietLog is the etcd client's logging: errors only, to standard error.
func quietLog() *zap.Config {
	c := zap.NewProductionConfig()
	c.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	c.Sampling = nil
	return &c
}

// key returns the etcd key of a store key.
func (s *Store) key(k string) string { return s.prefix + k }

// metaKey is the etcd key holding the compacted revision: the prefix
// itself, which no store key maps to since store keys are non-empty.
func (s *Store) metaKey() string { return s.prefix }

// kv converts an etcd KeyValue of a store key.
func (s *Store) kv(kv *mvccpb.KeyValue) store.KeyValue {
	return store.KeyValue{
		Key:            strings.TrimPrefix(string(kv.Key), s.prefix),
		Value:          kv.Value,
		CreateRevision: storeRev(kv.CreateRevision),
		ModRevision:    storeRev(kv.ModRevision),
	}
}

// check fails once the store is closed or ctx is done.
func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return ctx.Err()
}

// checkKey is check for a write, which needs a key.
func (s *Store) checkKey(ctx context.Context, key string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if key == "" {
		return errors.New("etcd: invalid empty key")
	}
	return nil
}

// fail maps an error of an etcd call to the store's errors: after Close
// every failure is store.ErrClosed (the client's calls fail as it closes).
func (s *Store) fail(what string, err error) error {
	switch {
	case s.closed.Load():
		return store.ErrClosed
	case errors.Is(err, rpctypes.ErrCompacted):
		return fmt.Errorf("etcd: %s: %w", what, store.ErrCompacted)
	case errors.Is(err, rpctypes.ErrFutureRev):
		return fmt.Errorf("etcd: %s: %w", what, store.ErrFutureRevision)
	}
	return fmt.Errorf("etcd: %s: %w", what, err)
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key string) (store.KeyValue, error) {
	if err := s.check(ctx); err != nil {
		return store.KeyValue{}, err
	}
	if key == "" { // no such key; and s.key("") is the meta key
		return store.KeyValue{}, fmt.Errorf("get %q: %w", key, store.ErrNotFound)
	}
	resp, err := s.cli.Get(ctx, s.key(key))
	if err != nil {
		return store.KeyValue{}, s.fail(fmt.Sprintf("get %q", key), err)
	}
	if len(resp.Kvs) == 0 {
		return store.KeyValue{}, fmt.Errorf("get %q: %w", key, store.ErrNotFound)
	}
	return s.kv(resp.Kvs[0]), nil
}

// meta reads the current and compacted store revisions in one linearizable
// read, and the ModRevision of the meta key (0 if absent).
func (s *Store) meta(ctx context.Context) (cur, compacted, metaMod int64, err error) {
	resp, err := s.cli.Get(ctx, s.metaKey())
	if err != nil {
		return 0, 0, 0, s.fail("read compacted revision", err)
	}
	compactedEtcd := s.learnedCompact.Load()
	if len(resp.Kvs) > 0 {
		metaMod = resp.Kvs[0].ModRevision
		v, err := strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("etcd: compacted revision in %q: %w", s.metaKey(), err)
		}
		compactedEtcd = max(compactedEtcd, v)
	}
	return storeRev(resp.Header.Revision), max(storeRev(compactedEtcd), 0), metaMod, nil
}

// CurrentRevision implements store.Store: etcd's current revision, read
// linearizably, so at least that of every acknowledged write.
func (s *Store) CurrentRevision(ctx context.Context) (int64, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	resp, err := s.cli.Get(ctx, s.metaKey(), clientv3.WithCountOnly())
	if err != nil {
		return 0, s.fail("read revision", err)
	}
	return storeRev(resp.Header.Revision), nil
}

// CompactedRevision implements store.Store: the revision Compact recorded,
// or a later one etcd reported to a watch (another client compacted).
func (s *Store) CompactedRevision(ctx context.Context) (int64, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	_, compacted, _, err := s.meta(ctx)
	return compacted, err
}

// Close implements store.Store: it ends every watch with store.ErrClosed,
// waits for their goroutines, and closes the client. A second Close returns
// store.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed.Swap(true) {
		s.mu.Unlock()
		return store.ErrClosed
	}
	s.mu.Unlock()
	s.cancel()
	s.watchers.Wait()
	if err := s.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("etcd: close: %w", err)
	}
	return nil
}
