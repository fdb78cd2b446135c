package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Seed 001's MySQL StatefulSet names two images: mysql:5.7 and the
// google-samples xtrabackup image (XtraBackup 2.4, ncat). Here they are host
// images of Debian's MariaDB, mariabackup and ncat (hack/install-test-deps.sh
// installs them) under the seed's own names, so its YAML runs as written.
const (
	mysqlImage      = "mysql:5.7"
	xtrabackupImage = "zhangmingkai4315/google-samples-xtrabackup:latest"
)

// mysqlEntrypoint is mysql:5.7's docker-entrypoint.sh (run with the image's
// command, mysqld) for MariaDB: it initializes an empty data dir with root
// reachable from anywhere without a password, as the image does with
// MYSQL_ALLOW_EMPTY_PASSWORD, and runs the server as root on every address
// (Debian's own configuration binds 127.0.0.1) with the pod's
// /etc/mysql/conf.d. Its configuration lives in the container's private
// /run/mysqld, as the image's own /etc/mysql would.
//
// MariaDB has no super-read-only (MySQL's read-only for SUPER users too),
// which the seed's slave.cnf sets, and refuses to start on an unknown
// option: read-only, its nearest, takes its place in the server's copy.
const mysqlEntrypoint = `#!/bin/bash
set -eo pipefail
shopt -s nullglob
[ "$1" = mysqld ] || exec "$@"
shift
mkdir -p /run/mysqld/conf.d
for f in /etc/mysql/conf.d/*.cnf; do
  sed -E 's/^[[:space:]]*super[-_]read[-_]only/read-only/' "$f" > "/run/mysqld/conf.d/${f##*/}"
done
cat > /run/mysqld/my.cnf <<'EOF'
[mysqld]
user = root
datadir = /var/lib/mysql
socket = /run/mysqld/mysqld.sock
pid-file = /run/mysqld/mysqld.pid
bind-address = 0.0.0.0
!includedir /run/mysqld/conf.d
EOF
init=()
if [ ! -d /var/lib/mysql/mysql ]; then
  if [ -z "$MYSQL_ALLOW_EMPTY_PASSWORD" ]; then
    echo >&2 "error: database is uninitialized and MYSQL_ALLOW_EMPTY_PASSWORD is not set (the only way this stand-in knows)"
    exit 1
  fi
  mariadb-install-db --defaults-file=/run/mysqld/my.cnf --user=root --skip-test-db
  # The image's first-start SQL, kept out of the binary log as it does.
  cat > /run/mysqld/init.sql <<'EOF'
SET @@SESSION.SQL_LOG_BIN=0;
ALTER USER 'root'@'localhost' IDENTIFIED BY '';
CREATE USER 'root'@'%' IDENTIFIED BY '';
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
EOF
  init=(--init-file=/run/mysqld/init.sql)
fi
exec mariadbd --defaults-file=/run/mysqld/my.cnf "${init[@]}" "$@"
`

// xtrabackupWrapper is the xtrabackup image's `xtrabackup` on mariabackup.
// After --prepare it leaves the two files the seed's script reads as
// XtraBackup 2.4 writes them: xtrabackup_binlog_info with two columns (file,
// position; mariabackup adds the GTID as a third, which the script's regex
// would fold into the file name), and xtrabackup_slave_info as one
// unterminated CHANGE MASTER TO (mariabackup ends it with ";", and the
// script appends ", MASTER_HOST=..." to it).
const xtrabackupWrapper = `#!/bin/sh
mariabackup "$@" || exit
dir=.
prepare=
for a; do
  case $a in
  --target-dir=*) dir=${a#--target-dir=} ;;
  --prepare) prepare=1 ;;
  esac
done
[ -n "$prepare" ] || exit 0
if [ -f "$dir/xtrabackup_binlog_info" ]; then
  awk '{print $1 "\t" $2}' "$dir/xtrabackup_binlog_info" > "$dir/xtrabackup_binlog_info.2"
  mv "$dir/xtrabackup_binlog_info.2" "$dir/xtrabackup_binlog_info"
fi
if [ -f "$dir/xtrabackup_slave_info" ]; then
  sed -i 's/;[[:space:]]*$//' "$dir/xtrabackup_slave_info"
fi
`

// glusterfsStorage stands in for the seed's glusterfs-storage class (a
// heketi at 10.44.0.3, not reachable here) under its name, which the
// claim template names by the beta annotation: the built-in CSI driver
// makes each claim a sparse 10Gi volume on the pod's node.
const glusterfsStorage = `apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: glusterfs-storage
provisioner: local.csi.moorage.io
volumeBindingMode: WaitForFirstConsumer
`

// TestSeed001MySQL runs seed 001's MySQL StatefulSet as written (ConfigMap,
// the headless mysql and the mysql-read Services, the set with its init
// containers and xtrabackup sidecar): the three replicas come up in order,
// mysql-1 clones mysql-0 and mysql-2 clones mysql-1 by DNS name over ncat,
// both replicate from mysql-0.mysql, and a row written on mysql-0 is read on
// mysql-2, and through mysql-read from each replica.
func TestSeed001MySQL(t *testing.T) {
	requireE2E(t)
	if os.Geteuid() != 0 {
		t.Skip("pods run with runc in their own network namespaces: root")
	}
	for _, p := range []string{"mariadbd", "mariadb-install-db", "mariabackup", "mbstream", "mysql", "mysqladmin", "ncat", "bash"} {
		if _, err := exec.LookPath(p); err != nil {
			if _, err := os.Stat(filepath.Join("/usr/sbin", p)); err != nil {
				t.Fatalf("%s is missing: run hack/install-test-deps.sh", p)
			}
		}
	}
	t.Parallel()
	v := defaultVersion
	// A node name of its own: every process of its pods is in the cgroup
	// /moorage-<node>, so what outlives the test is found.
	node := fmt.Sprintf("seed001-mysql-%d", os.Getpid())
	dataDir := t.TempDir()
	t.Cleanup(func() {
		if left := nodeProcesses(node, dataDir); len(left) > 0 {
			t.Errorf("processes left after the test:\n%s", strings.Join(left, "\n"))
		}
	})
	m := startMoorageWith(t, dataDir, "--node-name", node)

	// The entrypoint and wrappers are files on the host: a host image's
	// root is the host's (only the data dir is hidden).
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	for name, content := range map[string]string{
		"docker-entrypoint.sh": mysqlEntrypoint,
		"bin/xtrabackup":       xtrabackupWrapper,
		"bin/xbstream":         "#!/bin/sh\nexec mbstream \"$@\"\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m.hostImage(t, mysqlImage, "--entrypoint", filepath.Join(dir, "docker-entrypoint.sh"), "--cmd", "mysqld")
	m.hostImage(t, xtrabackupImage, "--env", "PATH="+bin+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")

	expectOK(t, m.kubectlStdin(t, v, glusterfsStorage, "create", "-f", "-"), "storageclass.storage.k8s.io/glusterfs-storage created")
	expectOK(t, m.kubectl(t, v, "apply", "-f", testdata("seed001-mysql-configmap.yaml"), "-f", testdata("seed001-mysql-service.yaml"),
		"-f", testdata("seed001-mysql-read.yaml"), "-f", testdata("seed001-mysql-statefulset.yaml")),
		"configmap/mysql created", "service/mysql created", "service/mysql-read created", "statefulset.apps/mysql created")

	// The seed asks 600m CPU a pod (mysql 500m, xtrabackup 100m): the three
	// fit a node of 2 CPUs, where nothing else asks for any.
	for _, p := range []string{"mysql-0", "mysql-1", "mysql-2"} {
		waitMySQLPod(t, m, v, p)
	}
	for i := 1; i < 3; i++ {
		prev, cur := m.pod(t, v, "default", fmt.Sprintf("mysql-%d", i-1)), m.pod(t, v, "default", fmt.Sprintf("mysql-%d", i))
		if cur.CreationTimestamp.Time.Before(readySince(prev).Truncate(time.Second)) {
			t.Errorf("mysql-%d created at %v, before mysql-%d was Ready at %v", i, cur.CreationTimestamp, i-1, readySince(prev))
		}
	}
	pvc := m.mustKubectl(t, v, "get", "pvc")
	for i := 0; i < 3; i++ {
		if want := fmt.Sprintf(`data-mysql-%d\s+Bound\s+pvc-\S+\s+10Gi\s+RWO\s+glusterfs-storage`, i); !regexp.MustCompile(want).MatchString(pvc) {
			t.Errorf("kubectl get pvc: no line like %q:\n%s", want, pvc)
		}
	}
	servers := 0
	for _, p := range nodeProcesses(node, dataDir) {
		if strings.Contains(p, "mariadbd ") {
			servers++
		}
	}
	if servers != 3 {
		t.Errorf("%d mariadbd in the cgroups of node %s, want 3: the check for leftovers would not see them", servers, node)
	}

	// Each replica cloned its predecessor, by its DNS name, and started
	// replicating from mysql-0: mysql-1 from the master's binlog position,
	// mysql-2 from the position mysql-1 had reached (xtrabackup_slave_info).
	for i, how := range []string{"", "+ rm xtrabackup_binlog_info", "+ mv xtrabackup_slave_info change_master_to.sql.in"} {
		p := fmt.Sprintf("mysql-%d", i)
		clone := m.kubectl(t, v, "logs", p, "-c", "clone-mysql")
		if i == 0 {
			expectOK(t, clone, "+ exit 0")
			continue
		}
		expectOK(t, clone, fmt.Sprintf("+ ncat --recv-only mysql-%d.mysql 3307", i-1), "+ xtrabackup --prepare --target-dir=/var/lib/mysql")
		// The sidecar starts replication once the server answers, which
		// may be after the pod is Ready.
		var logs, status result
		if !eventually(podTimeout, func() bool {
			logs = m.kubectl(t, v, "logs", p, "-c", "xtrabackup")
			status = m.kubectl(t, v, "exec", p, "-c", "mysql", "--", "mysql", "-h", "127.0.0.1", "-e", "SHOW SLAVE STATUS\\G")
			return strings.Contains(logs.Stdout, how) && strings.Contains(logs.Stdout, "Initializing replication from clone position") &&
				strings.Contains(logs.Stdout, "+ exec ncat --listen") &&
				status.Code == 0 && strings.Contains(status.Stdout, "Master_Host: mysql-0.mysql\n") &&
				strings.Contains(status.Stdout, "Slave_IO_Running: Yes\n") && strings.Contains(status.Stdout, "Slave_SQL_Running: Yes\n")
		}) {
			t.Errorf("%s does not replicate from mysql-0.mysql\n%s\n%s", p, logs, status)
		}
	}

	// The upstream tutorial's write on the master, read on the last replica.
	m.mustKubectl(t, v, "exec", "mysql-0", "-c", "mysql", "--", "mysql", "-h", "127.0.0.1", "-e",
		"CREATE DATABASE test; CREATE TABLE test.messages (message VARCHAR(250)); INSERT INTO test.messages VALUES ('hello')")
	var read result
	if !eventually(podTimeout, func() bool {
		read = m.kubectl(t, v, "exec", "mysql-2", "-c", "mysql", "--", "mysql", "-h", "127.0.0.1", "-e", "SELECT * FROM test.messages")
		return read.Code == 0 && read.Stdout == "message\nhello\n"
	}) {
		t.Fatalf("the row written on mysql-0 is not read on mysql-2\n%s", read)
	}

	// mysql-read hands each connection to a ready endpoint in turn: every
	// server answers, each with the row.
	seen := map[string]bool{}
	var last result
	if !eventually(podTimeout, func() bool {
		last = m.kubectl(t, v, "exec", "mysql-0", "-c", "mysql", "--", "mysql", "-h", "mysql-read", "-N", "-e", "SELECT @@server_id, message FROM test.messages")
		seen[last.Stdout] = last.Code == 0
		return seen["100\thello\n"] && seen["101\thello\n"] && seen["102\thello\n"]
	}) {
		t.Errorf("through mysql-read, answers %v; want each server's (100, 101, 102), each with the row; last:\n%s", seen, last)
	}
}

// waitMySQLPod waits for a pod of the set to be Running with both
// containers ready: it clones its predecessor first, so it takes longer
// than waitPodRow allows.
func waitMySQLPod(t *testing.T, m *moorage, v int, name string) {
	t.Helper()
	var last result
	if !eventually(2*podTimeout, func() bool {
		last = m.kubectl(t, v, "get", "pod", name)
		r, _ := columnValue(last.Stdout, "READY", name)
		s, _ := columnValue(last.Stdout, "STATUS", name)
		return r == "2/2" && s == "Running"
	}) {
		t.Fatalf("pod %s never Running 2/2\n%s\n%s\n%s", name, last, m.kubectl(t, v, "describe", "pod", name).Stdout, m.kubectl(t, v, "logs", name, "--all-containers"))
	}
}

// nodeProcesses lists the processes (pid and command line) in the cgroups
// of node (/moorage-<node>/…) or whose command line names its data dir.
func nodeProcesses(node, dataDir string) []string {
	files, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	var out []string
	for _, f := range files {
		pid := filepath.Dir(f)
		cgroups, err1 := os.ReadFile(f)
		cmdline, err2 := os.ReadFile(filepath.Join(pid, "cmdline"))
		if err1 != nil || err2 != nil {
			continue // gone meanwhile
		}
		cmd := strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
		if strings.Contains(string(cgroups), ":/moorage-"+node+"/") || strings.Contains(cmd, dataDir) {
			out = append(out, filepath.Base(pid)+" "+cmd)
		}
	}
	return out
}
