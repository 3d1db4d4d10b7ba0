"""The shell classifier behind `effect: read` on ssh steps, as a table: every shell form it must see
through, every allow-listed program with its writing options, quoting tricks, and hostile sizes.

The composition tables are paired: each form is read when all its parts read, and not read when any
part writes, so a form the parser did not understand cannot pass as read by accident (it would fail
the read half), and a form that hides a command cannot pass either (it would fail the write half).
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

from engine.adapters import shell_effects
from engine.adapters.shell_effects import MAX_DEPTH, MAX_LENGTH, PROGRAMS, classify, classify_template

# One proven-read invocation of every allow-listed program.
READ = {
    "cat": "cat /etc/hosts",
    "tac": "tac /var/log/redis/redis-server.log",
    "head": "head -n 5 /etc/passwd",
    "tail": "tail -n 50 -- /var/log/redis/redis-server.log",
    "ls": "ls -la /var/lib/redis",
    "stat": "stat -c '%s %Y' -- /var/lib/redis/dump.rdb",
    "wc": "wc -c < /var/lib/redis/dump.rdb",
    "cut": "cut -d: -f1 /etc/passwd",
    "grep": "grep -E '^(SwapTotal|SwapFree):' /proc/meminfo",
    "egrep": "egrep -c x /etc/hosts",
    "fgrep": "fgrep -i localhost /etc/hosts",
    "du": "du -sh /var/lib/redis",
    "ps": "ps -eo pid,user,rss,args",
    "pgrep": "pgrep -a redis-server",
    "pidof": "pidof redis-server",
    "id": "id -u",
    "uname": "uname -a",
    "uptime": "uptime",
    "getent": "getent hosts localhost",
    "whoami": "whoami",
    "groups": "groups",
    "nproc": "nproc",
    "arch": "arch",
    "tty": "tty",
    "logname": "logname",
    "pwd": "pwd",
    "cd": "cd /var/lib/redis",
    "exit": "exit 0",
    ":": ":",
    "true": "true",
    "false": "false",
    "echo": "echo '# iptables -S'",
    "printf": "printf -- '%s\\n' done",
    "test": "test -e /var/lib/redis/dump.rdb",
    "[": "[ /a -ef /b ]",
    "type": "type redis-server",
    "which": "which redis-server",
    "basename": "basename /var/lib/redis/dump.rdb",
    "dirname": "dirname /var/lib/redis/dump.rdb",
    "realpath": "realpath /var/lib/redis",
    "readlink": "readlink -f /var/lib/redis",
    "cmp": "cmp /var/backups/redis/a.rdb /var/lib/redis/dump.rdb",
    "diff": "diff -u /etc/redis/redis.conf /etc/redis/redis.conf.orig",
    "comm": "comm -12 a b",
    "join": "join a b",
    "paste": "paste a b",
    "nl": "nl a",
    "fold": "fold -w 80 a",
    "tr": "tr a-z A-Z",
    "od": "od -c /var/lib/redis/dump.rdb",
    "strings": "strings /var/lib/redis/dump.rdb",
    "column": "column -t a",
    "numfmt": "numfmt --to=iec 1048576",
    "expr": "expr 1 + 1",
    "seq": "seq 1 3",
    "sha1sum": "sha1sum /var/lib/redis/dump.rdb",
    "sha224sum": "sha224sum x",
    "sha256sum": "sha256sum /var/lib/redis/dump.rdb",
    "sha384sum": "sha384sum x",
    "sha512sum": "sha512sum x",
    "md5sum": "md5sum /var/lib/redis/dump.rdb",
    "b2sum": "b2sum x",
    "cksum": "cksum x",
    "sum": "sum x",
    "w": "w",
    "who": "who -b",
    "sort": "sort -rn -k2 -t: /etc/passwd",
    "uniq": "uniq -c",
    "date": "date '+%Y-%m-%d %H:%M:%S'",
    "hostname": "hostname -f",
    "df": "df -Pk -- /var/lib/redis",
    "free": "free -b",
    "ss": "ss -ltnp",
    "netstat": "netstat -tlnp",
    "lsof": "lsof -nP -i :6379",
    "findmnt": "findmnt -T /var/lib/redis",
    "mount": "mount",
    "journalctl": "journalctl -u redis-server -n 200 --no-pager",
    "systemctl": "systemctl status redis-server --no-pager",
    "ip": "ip -4 addr show dev eth0",
    "iptables": "iptables -S",
    "ip6tables": "ip6tables -L -n -v --line-numbers",
    "iptables-save": "iptables-save -t filter",
    "ip6tables-save": "ip6tables-save",
    "nft": "nft list ruleset",
    "find": "find /var/lib/redis -maxdepth 1 -name '*.rdb' -mmin -60 -printf '%p %s\\n'",
    "file": "file -b /var/lib/redis/dump.rdb",
    "redis-check-rdb": "redis-check-rdb /var/lib/redis/dump.rdb",
    "redis-check-aof": "redis-check-aof /var/lib/redis/appendonlydir/appendonly.aof.manifest",
    "sleep": "sleep 1",
    "set": "set -eu",
    "command": "command -v iptables",
    "sudo": "sudo -n -u redis cat /var/lib/redis/redis.conf",
    "timeout": "timeout 5 cat /etc/hosts",
    "xargs": "xargs -0 ls -l",
}

MORE_READ = [
    "systemctl is-active redis-server",
    "systemctl is-enabled redis-server",
    "systemctl show -p MainPID --value redis-server",
    "journalctl -u redis-server --since '1 hour ago' --no-pager -o short-iso",
    "journalctl --disk-usage",
    "ip route show",
    "ip r",
    "ip route get 10.0.0.1",
    "ip -br link",
    "ss -s",
    "ss -tn state established '( dport = :6379 )'",
    "netstat -s",
    "date +%s",
    "date -u -d @0 +%F",
    "date --iso-8601=seconds",
    "tail -c 100 -- /a",
    "tail -n 5 -q -- /a /b",
    "tail -n +5 -- /a",
    "sort -u -- a b",
    "sort -k 1,1 -S 10M a",
    "uniq -c -- a",
    "hostname",
    "hostname -I",
    "free -h -w",
    "find / -xdev -type f -size +100M -newermt '1 day ago' -ls",
    "find /var/lib/redis ! -name '*.tmp' -print0",
    "iptables -t nat -L -n",
    "nft -a list table inet filter",
    "lsof -p 1234",
    "findmnt -n -o SOURCE /",
    "mount -l",
    "file --mime-type -- /var/lib/redis/dump.rdb",
    "sudo journalctl -u redis-server -n 200 --no-pager",
    "sudo -u redis -- redis-check-rdb /var/lib/redis/dump.rdb",
    "command -V nft",
    "command cat /etc/hosts",
    "/bin/cat /etc/hosts",
    "/usr/bin/tail -n 5 -- /a",
    "/usr/sbin/ss -ltn",
    "sleep 0.5",
    "set -o pipefail",
    "LC_ALL=C sort a",
    "LANG=C TZ=UTC date",
    "x=1",
    "f=$(ls -1t /backups/*.rdb 2>/dev/null | head -n 1)",
    "ca\\\nt /etc/hosts",
    "cat x # > /etc/passwd",
    "cat x;# rm -rf /",
    "cat a#b",
    "echo '$(rm -rf /)'",
    'echo "\\$(rm -rf /)"',
    "echo \\$x",
    "echo {a,b}",
    "echo ~",
    "ls /var/lib/redis/*.rdb",
    "ls -- *",
    "cat <<'EOF'\n$(rm -rf /)\nEOF\n",
    "cat <<EOF\nplain $HOME text\nEOF\n",
    "cat <<-EOF\n\tindented\n\tEOF\n",
    "cat <<< 'a string'",
    "echo x 1>&2",
    "ls 2>&-",
    "cat <&0",
    "cat <> /dev/null",
    "! grep -q x /etc/hosts",
    "ls | xargs cat",
    "ls | xargs -r -n 1 sha256sum",
    "timeout -s KILL 5 tail -n 5 -- /a",
    "if command -v iptables >/dev/null 2>&1; then iptables -S 2>&1; "
    "elif command -v nft >/dev/null 2>&1; then nft list ruleset 2>&1; else echo none; fi",
    'date +%s; f=$(ls -1t /b/*.rdb 2>/dev/null | head -n 1); if [ -n "$f" ]; then echo "$f"; '
    "stat -c '%Y %s' \"$f\" 2>/dev/null || stat -f '%m %z' \"$f\"; fi",
    "ss -ltnp 2>/dev/null || netstat -tlnp 2>/dev/null",
    "cat <(ls) <(ps)",
    "( cd /var/lib/redis && ls )",
    "{ ls; cat /etc/hosts; } 2>&1 | head -n 5",
    "grep x /etc/hosts |& head",
    "ls \\\n  -l",
]


def _read_id(command: str) -> str:
    return command[:60]


@pytest.mark.parametrize("command", list(READ.values()) + MORE_READ, ids=_read_id)
def test_read_only_commands_are_proven(command: str) -> None:
    verdict = classify(command)
    assert verdict.read_only, verdict.reason


def test_every_allow_listed_program_has_a_read_case() -> None:
    assert set(READ) == set(PROGRAMS)


# -- compositions: read with reads, not read as soon as one part writes -----------------------------

READ_PARTS = ["cat /etc/hosts", "ls -l /var/lib/redis", "grep -c x /a", "systemctl is-active redis", "tail -n 5 -- /a"]
WRITE_PARTS = {
    "cp /var/backups/redis/a.rdb /var/lib/redis/dump.rdb": "'cp' is not a read-only program",
    "rm -f /var/lib/redis/dump.rdb": "'rm' is not a read-only program",
    "sort -o /var/lib/redis/dump.rdb a": "option '-o' of 'sort'",
    "cat a > /var/lib/redis/dump.rdb": "output redirection '>' writes a file",
    "tail -f /a": "option '-f' of 'tail'",
    "systemctl restart redis": "'systemctl restart' is not on the read-only list",
    "find /var/lib/redis -delete": "'find -delete' writes",
    "redis-check-aof --fix /a": "'--fix' writes",
}

FORMS = {
    "pipe-left": "{b} | {a}",
    "pipe-right": "{a} | {b}",
    "pipe-stderr": "{a} |& {b}",
    "and": "{a} && {b}",
    "or": "{a} || {b}",
    "semicolon": "{a}; {b}",
    "newline": "{a}\n{b}",
    "crlf-free-newlines": "{a}\n\n\n{b}\n",
    "continuation": "{a} \\\n&& {b}",
    "negated": "{a} && ! {b}",
    "subshell": "( {a}; {b} )",
    "group": "{{ {a}; {b}; }}",
    "group-redirected": "{{ {a}; {b}; }} 2>/dev/null",
    "if": "if {a}; then {b}; fi",
    "if-condition": "if {b}; then {a}; fi",
    "else": "if {a}; then {a}; else {b}; fi",
    "elif": "if {a}; then {a}; elif {b}; then {a}; fi",
    "nested-if": "if {a}; then if {a}; then {b}; fi; fi",
    "substitution": "echo $({b}) && {a}",
    "substitution-in-quotes": 'echo "x$({b})y"; {a}',
    "substitution-in-argument": '{a} "/tmp/$({b})"',
    "backticks": "echo `{b}`; {a}",
    "backticks-in-quotes": 'echo "`{b}`"; {a}',
    "nested-substitution": "echo $(echo $({b})); {a}",
    "process-substitution": "cat <({b}); {a}",
    "assignment": "v=$({b}); {a}",
    "assignment-quoted": 'v="$({b})"; {a}',
    "here-string": 'cat <<< "$({b})"; {a}',
    "redirect-target": "cat < $({b}); {a}",
    "comment-then": "{a} # note\n{b}",
    "sudo": "{a}; sudo {b}",
    "sudo-user": "{a}; sudo -n -u redis {b}",
    "command": "{a}; command {b}",
    "timeout": "{a}; timeout 10 {b}",
    "heredoc-then": "cat <<'EOF'\ntext\nEOF\n{a}; {b}",
    "deep": "( ( {{ {a} && ( {b} ); }} ) )",
}


def _compose(form: str, a: str, b: str) -> str:
    return FORMS[form].format(a=a, b=b)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("a", READ_PARTS)
def test_a_form_of_reads_is_read(form: str, a: str) -> None:
    command = _compose(form, a, "cat /etc/hostname")
    verdict = classify(command)
    assert verdict.read_only, f"{command!r}: {verdict.reason}"


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("write", WRITE_PARTS)
def test_a_form_hiding_a_write_is_not_read(form: str, write: str) -> None:
    command = _compose(form, READ_PARTS[0], write)
    verdict = classify(command)
    assert not verdict.read_only, command
    assert WRITE_PARTS[write] in verdict.reason, (command, verdict.reason)


# -- redirections ----------------------------------------------------------------------------------

WRITING_REDIRECTIONS = [">", ">>", ">|", "&>", "&>>", "1>", "2>", "2>>", "9>", "<>", ">&", "1>|"]


@pytest.mark.parametrize("op", WRITING_REDIRECTIONS)
@pytest.mark.parametrize(
    "target", ["/var/lib/redis/dump.rdb", "out", "'/dev/null '", "$f", "/dev/null2", "/dev/stdout"]
)
def test_output_redirection_to_a_file_is_not_read(op: str, target: str) -> None:
    verdict = classify(f"cat /etc/hosts {op}{target}")
    assert not verdict.read_only
    assert "redirection" in verdict.reason


@pytest.mark.parametrize("op", [">", ">>", ">|", "&>", "&>>", "2>", "2>>", "<>", ">&"])
def test_output_redirection_to_dev_null_is_read(op: str) -> None:
    assert classify(f"cat /etc/hosts {op} /dev/null").read_only


@pytest.mark.parametrize("redirect", ["2>&1", ">&2", "1>&2", "2>&-", "<&0", "< /etc/hosts", "<<< x", "3<&-"])
def test_descriptor_duplication_and_input_are_read(redirect: str) -> None:
    assert classify(f"cat {redirect}").read_only


@pytest.mark.parametrize(
    "command", ["> /var/lib/redis/dump.rdb", ">> log", "exec 3>/tmp/x", ": > /var/lib/redis/dump.rdb"]
)
def test_a_redirection_alone_still_writes(command: str) -> None:
    assert not classify(command).read_only


# -- every allow-listed program with what makes it write, run something, or never end ---------------

WRITING_USES = {
    "tail -f /a": "'-f'",
    "tail -F /a": "'-F'",
    "tail --follow /a": "'--follow'",
    "tail --follow=name /a": "'--follow'",
    "tail --retry /a": "'--retry'",
    "tail --pid=1 -n 5 /a": "'--pid'",
    "tail -s 1 /a": "'-s'",
    "tail -5f /a": "'-5'",
    "tail +5f": "obsolete",
    "sort -o /a b": "'-o'",
    "sort -ro/a b": "'-o'",
    "sort --output=/a b": "'--output'",
    "sort -T /tmp a": "'-T'",
    "sort --compress-program=gzip a": "'--compress-program'",
    "sort * ": "may be any option",
    "uniq a b": "OUTPUT",
    "uniq -- a b": "OUTPUT",
    "uniq -c -- *.log": "several operands",
    "uniq -c *.log": "may be any option",
    "date -s 2020-01-01": "'-s'",
    "date --set=2020-01-01": "'--set'",
    "date 0101000020": "sets the clock",
    "date $x": "may become any words",
    "hostname evil": "with an operand",
    "hostname -F /etc/x": "'-F'",
    "hostname -b x": "'-b'",
    "find / -exec rm {} ;": "'find -exec'",
    "find / -execdir rm {} +": "'find -execdir'",
    "find / -ok rm {} ;": "'find -ok'",
    "find / -okdir rm {} ;": "'find -okdir'",
    "find / -delete": "'find -delete'",
    "find / -fprint /a": "'find -fprint'",
    "find / -fprint0 /a": "'find -fprint0'",
    "find / -fprintf /a %p": "'find -fprintf'",
    "find / -fls /a": "'find -fls'",
    "find $d": "may be any expression",
    "find / -newer": "lacks its argument",
    "find / -name x -quit -unknown": "'-quit'",
    "df --sync": "'--sync'",
    "free -s 1": "'-s'",
    "free --seconds=1": "'--seconds'",
    "ss -K dst 10.0.0.1": "'-K'",
    "ss --kill": "'--kill'",
    "ss -D /tmp/x": "'-D'",
    "ss -E": "'-E'",
    "netstat -c": "'-c'",
    "netstat --continuous": "'--continuous'",
    "lsof -r 1": "'-r'",
    "lsof +r 1": "'+r'",
    "lsof +D /var": "'+D'",
    "findmnt --poll": "'--poll'",
    "findmnt -p": "'-p'",
    "mount /dev/sdb1 /mnt": "with an operand",
    "mount -a": "'-a'",
    "mount -o remount,rw /": "'-o'",
    "journalctl -f": "'-f'",
    "journalctl --follow": "'--follow'",
    "journalctl --vacuum-size=1G": "'--vacuum-size'",
    "journalctl --vacuum-time=1d": "'--vacuum-time'",
    "journalctl --vacuum-files=1": "'--vacuum-files'",
    "journalctl --rotate": "'--rotate'",
    "journalctl --flush": "'--flush'",
    "journalctl --sync": "'--sync'",
    "journalctl --relinquish-var": "'--relinquish-var'",
    "journalctl --setup-keys": "'--setup-keys'",
    "journalctl --cursor-file=/a": "'--cursor-file'",
    "journalctl --update-catalog": "'--update-catalog'",
    "systemctl start redis": "'systemctl start'",
    "systemctl stop redis": "'systemctl stop'",
    "systemctl restart redis": "'systemctl restart'",
    "systemctl reload redis": "'systemctl reload'",
    "systemctl enable redis": "'systemctl enable'",
    "systemctl disable redis": "'systemctl disable'",
    "systemctl mask redis": "'systemctl mask'",
    "systemctl kill redis": "'systemctl kill'",
    "systemctl daemon-reload": "'systemctl daemon-reload'",
    "systemctl set-property redis CPUQuota=1%": "'systemctl set-property'",
    "systemctl edit redis": "'systemctl edit'",
    "systemctl reset-failed": "'systemctl reset-failed'",
    "systemctl --now status redis": "'--now'",
    "systemctl -H otherhost status redis": "'-H'",
    "systemctl $verb redis": "may become any words",
    "ip addr add 10.0.0.1/24 dev eth0": "'ip addr add'",
    "ip link set eth0 down": "'ip link set'",
    "ip route del default": "'ip route del'",
    "ip route flush cache": "'ip route flush'",
    "ip -b /tmp/cmds": "'-b'",
    "ip -force addr": "'-force'",
    "ip netns exec x rm y": "'ip netns'",
    "iptables -F": "'-F'",
    "iptables -A INPUT -j DROP": "'-A'",
    "iptables -D INPUT 1": "'-D'",
    "iptables -Z": "'-Z'",
    "iptables -L -Z": "'-Z'",
    "iptables -P INPUT DROP": "'-P'",
    "iptables -t nat -X": "'-X'",
    "iptables-save -f /etc/iptables.rules": "'-f'",
    "nft flush ruleset": "'nft list ...'",
    "nft -f /tmp/rules": "'-f'",
    "nft list ruleset -f /tmp/rules": "'-f'",
    "nft 'list ruleset; flush ruleset'": "not on the read-only list",
    "nft list ruleset\\;flush ruleset": "not on the read-only list",
    "nft add rule inet filter input drop": "'nft list ...'",
    "nft -i": "not on the read-only list",
    "redis-check-aof --fix /a": "'--fix' writes",
    "redis-check-aof --truncate-to-timestamp 1 /a": "'--fix' writes",
    "redis-check-aof": "one file",
    "redis-check-rdb a b": "one file",
    "redis-check-aof $f": "one file",
    "file -C -m /tmp/magic": "'-C'",
    "file --compile": "'--compile'",
    "file -p /a": "'-p'",
    "sleep infinity": "literal number",
    "sleep $n": "literal number",
    "xargs rm": "'rm'",
    "xargs -I{} rm {}": "'-I'",
    "xargs sort": "may become any words",
    "xargs -a /a cat": "'-a'",
    "sudo -e /etc/redis/redis.conf": "'-e'",
    "sudo -s": "'-s'",
    "sudo -i": "'-i'",
    "sudo": "without a command",
    "sudo -E cat /a": "'-E'",
    "sudo FOO=1 cat": "not a read-only program",
    "sudo -- rm x": "'rm'",
    "sudoedit /etc/x": "'sudoedit'",
    "command rm x": "'rm'",
    "command -p rm x": "'rm'",
    "timeout 1 rm x": "'rm'",
    "timeout $d cat x": "may become any words",
    "timeout 5": "needs a duration word and a command",
    "set -k": "shell options only",
    "set -a": "shell options only",
    "set -- a b": "shell options only",
    "printf -v PATH /tmp": "'printf -v' assigns",
    "printf -vPATH /tmp": "'printf -v' assigns",
    "printf $fmt x": "'printf -v' assigns",
    "lsof -g -r 1": "'-r'",
    "date -s{{ x }}": "'-s'",
}


@pytest.mark.parametrize("command", WRITING_USES, ids=_read_id)
def test_writing_uses_of_allow_listed_programs_are_not_read(command: str) -> None:
    verdict = classify(command)
    assert not verdict.read_only, command
    assert WRITING_USES[command] in verdict.reason, verdict.reason


def test_an_option_argument_is_not_an_option() -> None:
    # getopt takes an option's argument verbatim: `-n -f` is "-f lines", `-nf` likewise.
    assert classify("tail -n -f -- /a").read_only
    assert classify("tail -nf 5 /a").read_only
    assert classify("sort -t -o -- a").read_only
    assert not classify("sort -t, -o x a").read_only


NOT_READ_PROGRAMS = (
    "cp mv rm dd tee sed awk gawk perl python python3 ruby node sh bash zsh dash ksh eval exec source . truncate "
    "touch mkdir rmdir chmod chown chgrp ln install rsync scp sftp curl wget nc socat kill pkill killall shutdown "
    "reboot halt poweroff redis-cli redis-server redis-benchmark logger crontab at batch systemd-run env nohup nice "
    "ionice sync mkfs fdisk parted vi vim nano ed ex patch tar gzip gunzip zcat unzip git make docker kubectl "
    "useradd passwd chpasswd visudo sysctl dmesg hwclock timedatectl hostnamectl iptables-restore ip6tables-restore "
    "nft-restore tc modprobe insmod rmmod swapoff swapon umount fsck tune2fs setfacl chattr mknod mkfifo shred "
    "split csplit xxd base64 jq yq vmstat iostat watch top htop less more man screen tmux script expect "
    "trap alias unalias export readonly declare typeset local let read mapfile readarray ulimit umask shopt "
    "hash enable builtin caller wait fg bg jobs disown suspend history fc pushd popd dirs complete compgen "
    "getopts shift return break continue exit2 cat2 lsblk blkid"
)


@pytest.mark.parametrize("program", NOT_READ_PROGRAMS.split())
def test_programs_off_the_list_are_not_read(program: str) -> None:
    verdict = classify(f"{program} /var/lib/redis/dump.rdb")
    assert not verdict.read_only
    assert f"'{program}' is not a read-only program" in verdict.reason or "not analysed" in verdict.reason


# -- quoting tricks, expansions, lookalikes --------------------------------------------------------

TRICKS = {
    "c'p' a /var/lib/redis/dump.rdb": "'cp' is not a read-only program",
    'c"p" a b': "'cp' is not a read-only program",
    "\\cp a b": "'cp' is not a read-only program",
    '"cp" a b': "'cp' is not a read-only program",
    "c\\p a b": "'cp' is not a read-only program",
    "c\\\np a b": "'cp' is not a read-only program",
    "'/bin/cp' a b": "'/bin/cp' is not a read-only program",
    "/usr/bin/cp a b": "'/usr/bin/cp' is not a read-only program",
    "/tmp/cat /etc/hosts": "'/tmp/cat' is not a read-only program",
    "./cat /etc/hosts": "'./cat' is not a read-only program",
    "/bin/../tmp/cat x": "not a read-only program",
    "$'cp' a b": "quoting is not analysed",
    '$"cp" a b': "quoting is not analysed",
    'echo "$(rm x)"': "'rm' is not a read-only program",
    'echo "a$(rm x)b"': "'rm' is not a read-only program",
    'echo "$(echo "$(rm x)")"': "'rm' is not a read-only program",
    "echo `echo \\`rm x\\``": "'rm' is not a read-only program",
    "echo \\$(rm x)": "function definitions",
    "$IFS": "the command name '$IFS' is not a literal word",
    "${IFS}cat /a": "not a literal word",
    "cat$IFS/etc/passwd": "not a literal word",
    "$x /a": "not a literal word",
    '"$x" /a': "not a literal word",
    "$(echo cp) a b": "not a literal word",
    "`echo cp` a b": "not a literal word",
    "/bin/c? a b": "not a literal word",
    "/usr/bin/[c]p a b": "not a literal word",
    "{c,}p a b": "not a literal word",
    "~/bin/cat /a": "not a literal word",
    "ｃat /etc/hosts": "'ｃat' is not a read-only program",
    "cаt /etc/hosts": "is not a read-only program",  # Cyrillic a
    "cat\u200b /etc/hosts": "is not a read-only program",
    "cat\u00a0/etc/hosts": "is not a read-only program",
    "cat\r /etc/hosts": "is not a read-only program",
    "CAT /etc/hosts": "'CAT' is not a read-only program",
    "echo $((1+1))": "arithmetic expansion",
    "echo ${x:-$(rm y)}": "parameter expansion",
    "echo ${x/a/b}": "parameter expansion",
    "echo ${#x}": "parameter expansion",
    "FOO=x cat /a": "'FOO=' before a command",
    "PATH=/tmp cat /a": "'PATH=' before a command",
    "LD_PRELOAD=/tmp/x.so cat /a": "'LD_PRELOAD='",
    "PAGER=/tmp/x systemctl status": "'PAGER='",
    "PATH=/tmp; cat /a": "assigning 'PATH'",
    "IFS=/; cat /a": "assigning 'IFS'",
    "BASH_ENV=/tmp/x; cat": "assigning 'BASH_ENV'",
    "path=/tmp; cat /a": "assigning 'path'",
    "a[$(rm x)]=1": "'rm'",
    "cat() { rm -rf /; }; cat x": "function definitions",
    "function cat { :; }": "'function' is not analysed",
    "for f in *; do cat $f; done": "'for' is not analysed",
    "while true; do :; done": "'while' is not analysed",
    "until false; do :; done": "'until' is not analysed",
    "case x in x) rm y ;; esac": "'case' is not analysed",
    "[[ -e x ]]": "'[[' is not analysed",
    "time ls": "'time' is not analysed",
    "coproc ls": "'coproc' is not analysed",
    "select x in a; do :; done": "'select' is not analysed",
    "sleep 1 &": "background",
    "cat x & cat y": "background",
    "cat x &\n": "background",
    "tee >(cat)": "process substitution",
    "cat >(cat)": "process substitution",
    "cat 'x": "unterminated single quote",
    'cat "x': "unterminated double quote",
    "cat `ls": "unterminated backquote",
    "cat $(ls": "')' expected",
    "(ls": "')' expected",
    "{ ls;": "'}' expected",
    "{ ls }": "'}' expected",
    "if true; then ls": "'fi' expected",
    "if true; ls; fi": "'fi' is not analysed",
    "ls )": "unexpected ')'",
    "ls ;;": "';;' is not analysed",
    "&& ls": "unexpected '&&'",
    "| ls": "unexpected '|'",
    "ls |": "unexpected 'end of command'",
    "cat \\": "trailing backslash",
    "cat /a\x00; rm -rf /": "a NUL character",
    "cat <<EOF\n$(rm x)\nEOF\n": "here-document 'EOF'",
    "cat <<EOF\n`rm x`\nEOF\n": "here-document 'EOF'",
    "cat <<EOF\nno end": "has no end",
    "cat <<EOF": "has no end",
    "cat <<$x\nx\n": "not a literal word",
    "cat <<'EOF'\nx\nEOF\nrm y": "'rm'",
    "": "empty command",
    "   \n\t ": "empty command",
    "eval 'cat x'": "'eval'",
    "exec cat x": "'exec'",
    ". /tmp/x": "'.'",
    "source /tmp/x": "'source'",
    "cat x <& f": "redirection '<&f'",
    "ls > $(rm y)": "'rm'",
}


@pytest.mark.parametrize("command", TRICKS, ids=_read_id)
def test_tricks_are_seen_through(command: str) -> None:
    verdict = classify(command)
    assert not verdict.read_only, command
    assert TRICKS[command] in verdict.reason, verdict.reason


# -- templates (validate): each {{ value }} is one shell-quoted word -------------------------------

TEMPLATES = {
    "cat {{ path }}": True,
    "cat -- {{ path }}": True,
    "ls -l {{ backup }} && redis-check-rdb {{ backup }}": True,
    "tail -n {{ n }} -- {{ paths.log }}": True,
    "cat /proc/{{ server.process_id }}/status": True,
    "date +{{ fmt }}": True,
    "uniq -c -- {{ a }}": True,
    "redis-check-aof {{ aof.lines[0] }}": True,
    "grep -c -- {{ tenant }} /a": True,
    "if [ -e {{ paths.rdb }} ]; then wc -c < {{ paths.rdb }}; fi": True,
    "{{ service.status }}": True,
    "{{ service.logs }}": True,
    "{{service.status}} 2>&1": True,
    "date; {{ service.status }}": True,
    "sort {{ file }}": "'{{ file }}' may be any option of 'sort' (put '--' before it)",
    "tail -n 5 {{ path }}": "'{{ path }}' may be any option of 'tail'",
    "df -Pk {{ paths.data_dir }}": "may be any option of 'df'",
    "date {{ when }}": "may be any option of 'date'",
    "date -- {{ when }}": "sets the clock",
    "uniq -- {{ a }} {{ b }}": "OUTPUT",
    "redis-check-aof {{ a }} {{ b }}": "one file",
    "{{ program }} /a": "the command name '{{ program }}' is not a literal word",
    "cat '{{ path }}'": "inside quotes: the engine quotes it already",
    'cat "{{ path }}"': "inside quotes: the engine quotes it already",
    "cat <<'E'\n{{ x }}\nE\n": "inside quotes",
    "{{ service.stop }}": "'{{ service.stop }}' is the inventory's shell text",
    "{{ service.restart }}; cat /a": "'{{ service.restart }}' is the inventory's shell text",
    "{{ service.status }} --now": "'{{ service.status }}' is the inventory's shell text",
    "cat {{ service.status }}": "inventory's shell text",
    "x{{ service.status }}": "inventory's shell text",
    "{{ service['start'] }}": "inventory's shell text",
    "{% if x %}cat /a{% endif %}": "'{%' is not analysed",
    "cat {# c #} /a": "'{#' is not analysed",
    'cat {{ "}}" }}': "is not analysed",
    "cat \ue000": "private-use characters",
    "cp {{ src }} {{ paths.rdb }}": "'cp' is not a read-only program",
}


@pytest.mark.parametrize("source", TEMPLATES, ids=_read_id)
def test_templates_are_classified_with_each_value_as_one_word(source: str) -> None:
    verdict = classify_template(source)
    expected = TEMPLATES[source]
    if expected is True:
        assert verdict.read_only, verdict.reason
    else:
        assert not verdict.read_only
        assert expected in verdict.reason, verdict.reason


@pytest.mark.parametrize("value", ["-f", "+5f", "--follow", "-o/etc/passwd", "a b", "$(rm x)", "`rm x`", ";rm x"])
def test_the_rendered_command_is_classified_with_the_real_value(value: str) -> None:
    import shlex

    rendered = f"tail {shlex.quote(value)}"  # what the engine renders for `tail {{ v }}`
    verdict = classify(rendered)
    if value.startswith(("-", "+")):
        assert not verdict.read_only, rendered
    else:
        assert verdict.read_only, (rendered, verdict.reason)  # quoted: one harmless file name


# -- the inventory's status and logs commands ------------------------------------------------------

STATUS = "'/tmp/host dir/bin/redis-service' status"


@pytest.mark.parametrize(
    ("command", "read"),
    [
        (STATUS, True),
        (f"{STATUS} 2>&1", True),
        (f"date; {STATUS} || true", True),
        (f"{STATUS} > /tmp/x", False),
        ("'/tmp/host dir/bin/redis-service' stop", False),
        (f"{STATUS} extra", False),
        ("/tmp/host dir/bin/redis-service status", False),  # three words, not the trusted two
    ],
)
def test_trusted_inventory_commands(command: str, read: bool) -> None:
    assert classify(command, trusted=[STATUS, ""]).read_only is read


def test_a_compound_trusted_command_is_trusted_only_whole() -> None:
    status = "systemctl is-active redis || /opt/bin/check-redis"
    assert classify(status, trusted=[status]).read_only
    assert not classify(f"{status}; echo x", trusted=[status]).read_only


# -- hostile sizes: bounded, never a hang, never an exception --------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        "(" * 10_000 + "ls" + ")" * 10_000,
        "$(" * 10_000 + "ls" + ")" * 10_000,
        '"$(' * 5_000 + "ls" + ')"' * 5_000,
        "<(" * 10_000 + "ls" + ")" * 10_000,
        "{ " * 10_000 + "ls" + "; }" * 10_000,
        "if true; then " * 3_000 + "ls" + "; fi" * 3_000,
        "echo `" + "$(" * 100 + "ls" + ")" * 100 + "`",
        "echo `echo \\`" * 60,
    ],
    ids=[
        "subshells",
        "substitutions",
        "quoted-substitutions",
        "process-substitutions",
        "groups",
        "ifs",
        "in-backticks",
        "backticks",
    ],
)
def test_deep_nesting_is_bounded(command: str) -> None:
    verdict = classify(command)
    assert not verdict.read_only
    assert "nested" in verdict.reason or "unterminated" in verdict.reason


def test_nesting_within_the_bound_is_analysed() -> None:
    depth = MAX_DEPTH - 1
    assert classify("(" * depth + "ls" + ")" * depth).read_only
    assert not classify("(" * depth + "rm x" + ")" * depth).read_only
    assert classify("echo " + "$(echo " * depth + "ls" + ")" * depth).read_only


def _backticks(command: str, levels: int) -> str:
    for _ in range(levels):
        command = "echo `" + command.replace("\\", "\\\\").replace("`", "\\`") + "`"
    return command


@pytest.mark.parametrize("levels", range(1, 9))
def test_nested_backticks_are_seen_through(levels: int) -> None:
    assert classify(_backticks("ls /a", levels)).read_only
    verdict = classify(_backticks("rm /a", levels))
    assert not verdict.read_only
    assert "'rm' is not a read-only program" in verdict.reason


@pytest.mark.parametrize(
    "command",
    [
        "cat " + "x " * (MAX_LENGTH // 2),
        "echo '" + "x" * MAX_LENGTH + "'",
        "'" * (MAX_LENGTH + 1),
    ],
    ids=["many-words", "long-quote", "quotes"],
)
def test_very_long_commands_are_not_analysed(command: str) -> None:
    verdict = classify(command)
    assert not verdict.read_only
    assert f"longer than {MAX_LENGTH}" in verdict.reason


@pytest.mark.parametrize(
    "command",
    [
        "cat " + "/a " * 20_000,
        "cat /a; " * 6_000,
        "cat /a | " * 6_000 + "cat",
        "echo " + '"$(cat /a)" ' * 3_000,
        "cat <<'E'\n" + "line\n" * 10_000 + "E\n",
        "cat " + "\\\n" * 20_000 + "/a",
    ],
    ids=["words", "lists", "pipes", "substitutions", "heredoc", "continuations"],
)
def test_long_commands_within_the_bound_are_analysed(command: str) -> None:
    assert len(command) <= MAX_LENGTH
    assert classify(command).read_only


ALPHABET = [*" \t\n;&|<>()$`'\"\\{}[]*?~#=!-+:/.,%^@", "cat", "rm", "ls", "x", "2", "EOF", "<<", "$(", "\u00a0"]


@pytest.mark.parametrize("seed", range(400))
def test_random_input_always_gets_a_verdict(seed: int) -> None:
    rng = random.Random(seed)
    command = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 200)))
    verdict = classify(command)
    assert isinstance(verdict.read_only, bool)
    assert verdict.read_only or verdict.reason
    template_verdict = classify_template(command.replace("x", "{{ x }}"))
    assert isinstance(template_verdict.read_only, bool)


def test_random_reads_stay_read_when_a_write_is_appended() -> None:
    rng = random.Random(12)
    for _ in range(300):
        parts = [rng.choice(READ_PARTS) for _ in range(rng.randint(1, 4))]
        joiners = [rng.choice([" | ", " && ", " || ", "; ", "\n"]) for _ in parts]
        read = "".join(p + j for p, j in zip(parts, joiners, strict=True)) + "true"
        assert classify(read).read_only, read
        write = read + rng.choice([" && ", "; ", " | "]) + rng.choice(list(WRITE_PARTS))
        assert not classify(write).read_only, write


def test_the_module_does_no_io() -> None:
    tree = ast.parse(Path(shell_effects.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "re", "collections.abc", "dataclasses"}
    calls = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not calls & {"open", "exec", "eval", "__import__"}


@pytest.mark.parametrize("command", list(READ.values()), ids=_read_id)
def test_a_read_redirected_into_a_file_is_not_read(command: str) -> None:
    verdict = classify(f"{command} > /var/lib/redis/dump.rdb")
    assert not verdict.read_only
    assert "output redirection '>' writes a file (/var/lib/redis/dump.rdb)" in verdict.reason


# -- the shipped catalog: every ssh step labelled read is proven, statically and once rendered ---------


class _Anything(str):
    """A template value of any shape (`paths.rdb`, `aof_loc.lines[0]`) rendering as the same text."""

    def __getattr__(self, name: str) -> _Anything:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Anything(str(self))

    def __getitem__(self, key: object) -> _Anything:  # type: ignore[override]
        return _Anything(str(self))


def _shipped_read_steps() -> list[tuple[str, str]]:
    import yaml

    from engine.resources import procedures_dir

    found = []
    for path in sorted(procedures_dir().glob("*/*.yaml")):
        for step in yaml.safe_load(path.read_text(encoding="utf-8")).get("steps") or []:
            if "ssh" in step and step.get("effect") == "read":
                found.append((f"{path.stem}:{step['id']}", step["ssh"]["run"]))
    return found


SHIPPED = _shipped_read_steps()
STATUS_TEXT = "'/tmp/host dir/bin/redis-service' status"
LOGS_TEXT = "tail -n 200 '/tmp/host dir/redis.log'"


def test_the_catalog_has_ssh_read_steps() -> None:
    assert len(SHIPPED) >= 20


@pytest.mark.parametrize(("step", "run"), SHIPPED, ids=[s for s, _ in SHIPPED])
@pytest.mark.parametrize("value", ["/var/lib/redis/dump.rdb", "/tmp/dir with space/x;rm -rf /", "-f", "+5f", "$(rm x)"])
def test_shipped_read_steps_stay_read_whatever_their_values(step: str, run: str, value: str) -> None:
    from engine.spec import template
    from engine.spec.template import ShellText

    assert classify_template(run).read_only, classify_template(run).reason
    anything = _Anything(value)
    service = {"status": ShellText(STATUS_TEXT), "logs": ShellText(LOGS_TEXT)}
    names = template.variables(run) - {"service"}
    values = {name: anything for name in names} | {"service": service}
    rendered = template.render(run, values, shell=True)
    verdict = classify(rendered, trusted=[STATUS_TEXT, LOGS_TEXT])
    assert verdict.read_only, (rendered, verdict.reason)
