"""Whether a shell command only reads, proven from the command itself: what `effect: read` may claim.

The author's label is a claim; this module checks it. The command is parsed as a POSIX shell reads
it (lists, pipelines, `if`, subshells, groups, quoting, line continuations, parameter expansion,
command and process substitution, globs, redirections, here-documents) and is proven read-only only
when every command that can run is a program on the allow-list below, given only options known not
to write, not to run another program and not to run forever, with no output redirection except to
/dev/null or another descriptor. A word the parser cannot know (a variable, a glob, a template
value) is accepted only where it cannot change which program runs or which option it is given.
Anything not understood is not read: the lists fail safe, a new program or option is never taken
for a read.

Pure: no I/O. `classify` judges a rendered command; `classify_template` judges a `run:` template
with each `{{ value }}` as the single shell-quoted word the engine renders it to (for `validate`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

MAX_LENGTH = 65536  # longer commands are not analysed (not read)
MAX_DEPTH = 40  # nesting of substitutions, subshells, groups and `if`s

# Redirection targets that are no file: output there writes nothing.
NULL_TARGETS = frozenset({"/dev/null"})
# Environment a program may be given (`LC_ALL=C sort`): locale and time zone change no behaviour
# beyond formatting. Any other `NAME=value cmd` (LD_PRELOAD, PATH, PAGER, ...) is not read.
SAFE_ENV = re.compile(r"^(LC_[A-Z]+|LANG|LANGUAGE|TZ)$")
# Shell variables a command may set for itself (`f=$(ls ...)`): lower case only, so no exported
# variable (PATH, IFS, LD_*, BASH_ENV, PS4, ...) changes what later commands run; zsh's tied arrays out.
SAFE_VAR = re.compile(r"^[a-z_][a-z0-9_]*$")
TIED_VARS = frozenset({"path", "cdpath", "fpath", "manpath", "mailpath", "module_path", "fignore", "psvar"})
PROGRAM_DIRS = ("/bin/", "/usr/bin/", "/sbin/", "/usr/sbin/", "/usr/local/bin/", "/usr/local/sbin/")

_KEYWORDS = frozenset(
    {"if", "then", "elif", "else", "fi", "do", "done", "case", "esac", "while", "until", "for", "in"}
    | {"function", "select", "time", "coproc", "{", "}", "!", "[[", "]]"}
)
_OPERATORS = (  # longest first
    "<<<", "<<-", "&>>", "&&", "||", ";;", ";&", "|&", "&>", ">>", ">|", ">&", "<<", "<>", "<&",
    "<(", ">(", "(", ")", ";", "&", "|", "<", ">", "\n",
)  # fmt: skip
_REDIRECTIONS = frozenset({"<", ">", ">>", ">|", "<>", "<&", ">&", "&>", "&>>", "<<", "<<-", "<<<"})
_META = frozenset(" \t\n;&|<>()")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPECIAL_PARAMS = frozenset("?#@*$!-0123456789")
_PRIVATE_USE = re.compile("[\ue000-\uf8ff]")
_BRACE_EXPANSION = re.compile(r"\{.*(,|\.\.).*\}")  # over a word's unquoted braces, commas and dots
_IO_NUMBER = re.compile(r"\d+(?=[<>])")
_BRACED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*|[?#@*$!0-9-])\}")


@dataclass(frozen=True)
class Verdict:
    read_only: bool
    reason: str = ""  # why not, naming the word: "'cp' is not a read-only program"

    def __bool__(self) -> bool:
        return self.read_only


class NotProven(Exception):
    """Raised at the first thing that is not proven read-only; its message names the word."""


@dataclass(frozen=True)
class Word:
    text: str  # as written (template values shown as `{{ ... }}`), for messages
    value: str | None  # after quote removal, when every character is known
    prefix: str  # the characters known before the first unknown one
    splits: str = ""  # "fields": may become any words (unquoted $x); "glob": names starting with prefix
    plain: bool = False  # no quoting, no expansion: may be a reserved word or an assignment
    assigns: str | None = None  # NAME of a NAME=value word
    shell_text: str | None = None  # an unquoted inventory command inside the word (template check only)
    trusted: bool = False  # the word is exactly the inventory's status/logs command (template check only)

    def may_start_with(self, chars: str) -> bool:
        """Whether the word, once expanded, may begin with one of `chars` (an option's '-')."""
        if self.prefix:
            return self.prefix[0] in chars
        return self.value is None


@dataclass(frozen=True)
class Marker:
    """A `{{ }}` of a template, replaced by one private-use character while the template is checked."""

    kind: str  # "value" (shell-quoted by the engine), "trusted" (service.status/logs), "shell" (other service.*)
    text: str


# ----------------------------------------------------------------------------------------------
# Programs


@dataclass(frozen=True)
class Options:
    """getopt-style options a program may be given without writing; anything else is refused."""

    short: str = ""  # letters without an argument
    short_arg: str = ""  # letters taking an argument (`-n5` or `-n 5`)
    long: frozenset[str] = frozenset()  # --name
    long_arg: frozenset[str] = frozenset()  # --name=x or --name x
    long_opt: frozenset[str] = frozenset()  # --name or --name=x (an optional argument binds only with =)
    prefixes: str = "-"  # characters that start an option (lsof: "-+")
    permute: bool = True  # GNU: options may follow operands; False: the first operand ends them


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _opts(
    short: str = "", short_arg: str = "", long: str = "", long_arg: str = "", long_opt: str = "", **kw: bool | str
) -> Options:
    """Options from space-separated names: _opts("qv", "n", "quiet verbose", "lines")."""
    return Options(short, short_arg, _words(long), _words(long_arg), _words(long_opt), **kw)  # type: ignore[arg-type]


Check = Callable[["_Parser", str, list[Word]], None]


def _free(parser: _Parser, name: str, args: list[Word]) -> None:
    """No argument of these programs writes, runs a program or runs forever."""


def _options(spec: Options, operands: Callable[[str, list[Word]], None] | None = None) -> Check:
    def check(parser: _Parser, name: str, args: list[Word]) -> None:
        found = _parse_options(name, spec, args)
        if operands is not None:
            operands(name, found)

    return check


def _parse_options(name: str, spec: Options, args: Sequence[Word]) -> list[Word]:
    """The operands left after checking every option against `spec`; raises on anything else."""
    operands: list[Word] = []
    i, only_operands = 0, False
    while i < len(args):
        word = args[i]
        i += 1
        if only_operands:
            operands.append(word)
            continue
        if word.splits == "fields":
            raise NotProven(f"'{word.text}' may become any words, options of '{name}' included")
        if not word.may_start_with(spec.prefixes):
            operands.append(word)
            if not spec.permute:
                only_operands = True
            continue
        known = word.value if word.value is not None else word.prefix
        if word.value == "--" and "-" in spec.prefixes:
            only_operands = True
            continue
        if word.value is not None and len(known) == 1:  # a lone "-" is stdin, an operand
            operands.append(word)
            continue
        if known.startswith("--"):
            opt, eq, _ = known[2:].partition("=")
            if word.value is None and not eq:
                raise NotProven(f"'{word.text}' may be any option of '{name}'")
            if opt in spec.long and not eq and word.value is not None:
                continue
            if opt in spec.long_opt:
                continue
            if opt in spec.long_arg:
                if not eq:
                    i = _option_argument(name, f"--{opt}", args, i)
                continue
            raise NotProven(f"option '--{opt}' of '{name}' is not on the read-only list")
        j = 1
        while True:
            if j >= len(known):
                if word.value is None:
                    raise NotProven(f"'{word.text}' may be any option of '{name}' (put '--' before it)")
                break
            letter = known[j]
            if letter in spec.short_arg:
                if j + 1 == len(known) and word.value is not None:
                    i = _option_argument(name, f"-{letter}", args, i)
                break
            if letter not in spec.short:
                raise NotProven(f"option '{known[0]}{letter}' of '{name}' is not on the read-only list")
            j += 1
    return operands


def _option_argument(name: str, option: str, args: Sequence[Word], i: int) -> int:
    if i >= len(args):
        raise NotProven(f"option '{option}' of '{name}' lacks its argument")
    if args[i].splits:
        raise NotProven(f"the argument '{args[i].text}' of '{name} {option}' may become several words")
    return i + 1


def _no_operands(name: str, operands: list[Word]) -> None:
    if operands:
        raise NotProven(f"'{name}' with an operand ('{operands[0].text}') changes something")


def _at_most(count: int, why: str) -> Callable[[str, list[Word]], None]:
    def check(name: str, operands: list[Word]) -> None:
        for word in operands:
            if word.splits:
                raise NotProven(f"'{word.text}' may become several operands of '{name}' ({why})")
        if len(operands) > count:
            raise NotProven(f"'{name}' operand '{operands[count].text}' {why}")

    return check


def _date_operands(name: str, operands: list[Word]) -> None:
    for word in operands:
        if not word.prefix.startswith("+") or word.splits:
            raise NotProven(f"'{name} {word.text}': an operand that is not a +FORMAT sets the clock")


_TAIL = _opts("qvz", "nc", "quiet silent verbose zero-terminated", "lines bytes")  # no -f/-F/--follow/-s/--pid


def _tail(parser: _Parser, name: str, args: list[Word]) -> None:
    """GNU tail reads a first word +N[f] as an obsolete option (with `f`: follow forever) when it
    has one or two words; with more (`tail -n 5 -- FILE`) every operand is a file."""
    _parse_options(name, _TAIL, args)
    if len(args) <= 2 and args and args[0].may_start_with("+"):
        raise NotProven(f"'{name} {args[0].text}': an obsolete +N[f] operand may follow forever")


def _printf(parser: _Parser, name: str, args: list[Word]) -> None:
    """bash's `printf -v NAME` assigns a variable (`printf -v PATH /tmp` changes what runs next)."""
    if args and args[0].value != "--" and args[0].may_start_with("-"):
        raise NotProven(f"'{name} {args[0].text}': 'printf -v' assigns a shell variable")


def _sleep(parser: _Parser, name: str, args: list[Word]) -> None:
    for word in args:
        if word.value is None or not re.fullmatch(r"\d+(\.\d+)?[smhd]?", word.value):
            raise NotProven(f"'{name} {word.text}': only a literal number of seconds is known to end")


def _one_file(parser: _Parser, name: str, args: list[Word]) -> None:
    """redis-check-rdb/-aof read exactly one file; redis-check-aof's --fix needs a second word."""
    if len(args) != 1 or args[0].splits:
        shown = " ".join(w.text for w in args)
        raise NotProven(f"'{name} {shown}': only one file argument is known to read ('--fix' writes)")


def _nft(parser: _Parser, name: str, args: list[Word]) -> None:
    """nft joins its words into one nft command line, so every word must be a plain literal."""
    options = _words("-a -n -nn -s -j -t -y -N --handle --numeric --stateless --json --terse")
    rest = [w for w in args if w.value not in options]
    for word in rest:
        if word.value is None or not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.-]*", word.value):
            raise NotProven(f"'{name}' word '{word.text}' is not on the read-only list")
    if not rest or rest[0].value != "list":
        raise NotProven(f"'{name}' is read-only only as '{name} list ...'")


_IP_OBJECTS = _words("a ad addr address r ro route l link n neigh neighbor neighbour ru rule")
_IP_OPTIONS = _words("-4 -6 -s -stats -d -details -o -oneline -br -brief -j -json -p -pretty -h -human -c -color")


def _ip(parser: _Parser, name: str, args: list[Word]) -> None:
    words = []
    for word in args:
        if word.value is None or not re.fullmatch(r"[A-Za-z0-9_.:/@+-]+", word.value):
            raise NotProven(f"'{name}' word '{word.text}' is not on the read-only list")
        words.append(word.value)
    while words and words[0].startswith("-"):
        if words[0] not in _IP_OPTIONS:
            raise NotProven(f"option '{words[0]}' of '{name}' is not on the read-only list")
        words.pop(0)
    if not words or words[0] not in _IP_OBJECTS:
        raise NotProven(f"'{name} {' '.join(words[:1])}' is not on the read-only list (addr, route, link, neigh, rule)")
    verbs = {"show", "list", "lst"} | ({"get"} if words[0] in ("r", "ro", "route") else set())
    if len(words) > 1 and words[1] not in verbs:
        raise NotProven(f"'{name} {words[0]} {words[1]}' is not on the read-only list (show, list)")


_SYSTEMCTL_VERBS = frozenset(
    {"status", "is-active", "is-enabled", "is-failed", "is-system-running", "show", "cat", "list-units"}
    | {"list-unit-files", "list-timers", "list-sockets", "list-dependencies", "list-jobs", "get-default"}
)
_SYSTEMCTL = _opts(
    "alqr", "nptoP",
    "no-pager full all quiet value plain no-legend system user failed recursive reverse before after show-types",
    "lines property type state output",
)  # fmt: skip


def _systemctl(parser: _Parser, name: str, args: list[Word]) -> None:
    operands = _parse_options(name, _SYSTEMCTL, args)
    if not operands or operands[0].value not in _SYSTEMCTL_VERBS:
        verb = operands[0].text if operands else ""
        raise NotProven(f"'{name} {verb}' is not on the read-only list (status, is-active, show, ...)")


_FIND_FLAGS = _words(
    "-print -print0 -ls -prune -empty -true -false -readable -writable -executable -xdev -mount -depth "
    "-follow -nowarn -warn -noleaf -daystart -ignore_readdir_race -noignore_readdir_race -not -a -and "
    "-o -or ! ( ) , -nouser -nogroup"
)
_FIND_WITH_ARG = _words(
    "-name -iname -path -ipath -wholename -iwholename -regex -iregex -regextype -type -xtype -size "
    "-mtime -mmin -atime -amin -ctime -cmin -newer -anewer -cnewer -user -group -uid -gid -perm -links "
    "-inum -samefile -maxdepth -mindepth -fstype -lname -ilname -used -printf"
)
_FIND_WRITES = _words("-exec -execdir -ok -okdir -delete -fprint -fprint0 -fprintf -fls")


def _find(parser: _Parser, name: str, args: list[Word]) -> None:
    i = 0
    while i < len(args) and args[i].value in ("-H", "-L", "-P"):
        i += 1
    while i < len(args) and not args[i].may_start_with("-(!),"):  # start points
        if args[i].splits == "fields":
            raise NotProven(f"'{args[i].text}' may become any words, expressions of '{name}' included")
        i += 1
    while i < len(args):
        word = args[i]
        value = word.value
        if value is None:
            raise NotProven(f"'{word.text}' may be any expression of '{name}'")
        if value in _FIND_WRITES:
            raise NotProven(f"'{name} {value}' writes or runs a program")
        if value in _FIND_FLAGS:
            i += 1
        elif value in _FIND_WITH_ARG or re.fullmatch(r"-newer[aBcm][aBcmt]", value):
            i = _option_argument(name, value, args, i + 1)
        else:
            raise NotProven(f"'{name}' expression '{value}' is not on the read-only list")


def _set(parser: _Parser, name: str, args: list[Word]) -> None:
    for word in args:
        if word.value is None or not re.fullmatch(r"[-+][euxvfCo]+|pipefail|errexit|nounset|xtrace|noglob", word.value):
            raise NotProven(f"'{name} {word.text}' is not on the read-only list (shell options only)")


def _command(parser: _Parser, name: str, args: list[Word]) -> None:
    """`command -v X` only looks X up; `command X ...` runs X (bypassing functions)."""
    if args and args[0].value in ("-v", "-V"):
        return
    while args and args[0].value == "-p":
        args = args[1:]
    parser.check_command(args)


_SUDO = _opts("nHS", "ug", permute=False)
_TIMEOUT = _opts("v", "sk", "preserve-status foreground verbose", "signal kill-after", permute=False)
_XARGS = _opts(
    "0rt", "nLdsP", "null no-run-if-empty verbose", "max-args max-lines delimiter max-chars max-procs", permute=False
)


def _sudo(parser: _Parser, name: str, args: list[Word]) -> None:
    operands = _parse_options(name, _SUDO, args)
    if not operands:
        raise NotProven(f"'{name}' without a command is not on the read-only list")
    parser.check_command(operands)


def _timeout(parser: _Parser, name: str, args: list[Word]) -> None:
    operands = _parse_options(name, _TIMEOUT, args)
    if len(operands) < 2 or operands[0].splits:
        raise NotProven(f"'{name}' needs a duration word and a command")
    parser.check_command(operands[1:])


def _xargs(parser: _Parser, name: str, args: list[Word]) -> None:
    """xargs runs its command with words read from stdin: the command must accept any words."""
    operands = _parse_options(name, _XARGS, args) or [Word("echo", "echo", "echo")]
    parser.check_command([*operands, Word("<words from stdin>", None, "", splits="fields")])


_FREE = (
    "cat tac head ls stat wc cut grep egrep fgrep du ps pgrep pidof id uname uptime getent whoami groups "
    "nproc arch tty logname pwd cd exit : true false echo test [ type which basename dirname "
    "realpath readlink cmp diff comm join paste nl fold tr od strings column numfmt expr seq "
    "sha1sum sha224sum sha256sum sha384sum sha512sum md5sum b2sum cksum sum w who"
)

PROGRAMS: Mapping[str, Check] = {
    **dict.fromkeys(_words(_FREE), _free),
    "tail": _tail,
    "sort": _options(
        _opts(
            "bdfgiMhnRrVcCmsuz",
            "ktS",
            "ignore-leading-blanks dictionary-order ignore-case general-numeric-sort ignore-nonprinting "
            "month-sort human-numeric-sort numeric-sort random-sort reverse version-sort check merge stable "
            "unique zero-terminated debug",
            "key field-separator buffer-size parallel random-source sort files0-from",
            "check",
        )
    ),  # no -o/--output, -T/--temporary-directory, --compress-program
    "uniq": _options(
        _opts(
            "cdDuiz",
            "fsw",
            "count repeated unique ignore-case zero-terminated",
            "skip-fields skip-chars check-chars",
            "all-repeated group",
        ),
        _at_most(1, "is the OUTPUT file uniq writes"),
    ),
    "date": _options(
        _opts("uR", "dfr", "utc universal rfc-email debug", "date file reference rfc-3339", "iso-8601"), _date_operands
    ),  # no -s/--set; -I takes its format attached only
    "hostname": _options(
        _opts("sfdiIaAy", "", "short fqdn long domain ip-address all-ip-addresses all-fqdns alias nis yp"), _no_operands
    ),  # no -F/--file, -b/--boot, no NAME
    "df": _options(
        _opts(
            "ahHiklPTv",
            "Btx",
            "all human-readable si inodes local portability print-type total no-sync",
            "block-size type exclude-type",
            "output",
        )
    ),  # no --sync
    "free": _options(
        _opts("bkmghltwL", "", "bytes kilo mega giga tera peta kibi mebi gibi tebi pebi human si lohi total wide line"),
        _no_operands,
    ),  # no -s/--seconds (repeats forever)
    "ss": _options(
        _opts(
            "HnralmpiosetuwxS046zZMb",
            "fA",
            "no-header numeric resolve all listening memory processes info options summary extended tcp udp raw "
            "unix ipv4 ipv6 oneline sctp",
            "family query",
        )
    ),  # no -K/--kill, -D/--diag, -E/--events, -N/--net
    "netstat": _options(
        _opts(
            "tulnpaeriswW46vgx",
            "",
            "tcp udp listening numeric numeric-hosts numeric-ports numeric-users programs all extend route "
            "interfaces statistics wide verbose groups unix",
        ),
        _no_operands,
    ),  # no -c/--continuous
    "lsof": _options(_opts("nPltaRwVbhig", "pucd", prefixes="-+")),  # no -r/+r (repeat), -D, +D, +L ...
    "findmnt": _options(
        _opts(
            "AabcDdfklmnrsuUvJe",
            "oOtTSFN",
            "ascii all bytes canonicalize df direct-io evaluate first-only invert json kernel list mtab "
            "noheadings raw fstab notruncate nofsroot submounts real pseudo shadowed",
            "output options types target source tab-file nofsroot",
        )
    ),  # no -p/--poll
    "mount": _options(_opts("l"), _no_operands),  # listing only
    "journalctl": _options(
        _opts(
            "aqrxkmlenbN",
            "uptgSUoDMF",
            "no-pager reverse quiet all full catalog merge dmesg utc no-hostname system user pager-end "
            "list-boots disk-usage no-full show-cursor header fields",
            "unit user-unit priority identifier grep since until output directory file machine output-fields "
            "field facility",
            "lines boot case-sensitive",
        ),
    ),  # no -f/--follow, --vacuum-*, --rotate, --flush, --sync, --relinquish-var, --setup-keys, --cursor-file
    "systemctl": _systemctl,
    "ip": _ip,
    "iptables": _options(
        _opts("SLnvx", "t", "list-rules list numeric verbose exact line-numbers", "table")
    ),  # no -Z/--zero nor any rule-changing command
    "ip6tables": _options(_opts("SLnvx", "t", "list-rules list numeric verbose exact line-numbers", "table")),
    "iptables-save": _options(_opts("c", "t", "counters", "table"), _no_operands),
    "ip6tables-save": _options(_opts("c", "t", "counters", "table"), _no_operands),
    "nft": _nft,
    "find": _find,
    "file": _options(
        _opts(
            "bcEhiklLNnrsSvz0",
            "efFmP",
            "brief mime mime-type mime-encoding dereference no-dereference special-files uncompress keep-going "
            "raw no-buffer print0 extension apple no-pad",
            "exclude separator magic-file files-from parameter",
        )
    ),  # no -C/--compile, -p/--preserve-date
    "redis-check-rdb": _one_file,
    "redis-check-aof": _one_file,
    "sleep": _sleep,
    "printf": _printf,
    "set": _set,
    "command": _command,
    "sudo": _sudo,
    "timeout": _timeout,
    "xargs": _xargs,
}


# ----------------------------------------------------------------------------------------------
# The parser


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "op", "eof"
    op: str = ""
    word: Word | None = None
    io: str = ""  # a redirection's descriptor number ("2" in 2>&1)


@dataclass
class _Parser:
    source: str
    depth: int = 0
    markers: Mapping[str, Marker] = field(default_factory=dict)
    trusted: Sequence[tuple[str, ...]] = ()
    pos: int = 0
    _peeked: _Token | None = None
    _heredocs: list[tuple[str, bool, bool]] = field(default_factory=list)  # (delimiter, strip tabs, expands)

    # -- grammar -------------------------------------------------------------------------------
    def program(self) -> None:
        self.command_list(frozenset())
        token = self.next()
        if token.kind != "eof":
            raise NotProven(f"unexpected '{token.op or (token.word.text if token.word else '')}'")
        if self._heredocs:
            raise NotProven(f"here-document '{self._heredocs[0][0]}' has no end")

    def command_list(self, stops: frozenset[str]) -> None:
        while True:
            self.skip_newlines()
            token = self.peek()
            if token.kind == "eof" or self._is_stop(token, stops):
                return
            self.and_or()
            token = self.peek()
            if token.kind == "op" and token.op in (";", "\n"):
                self.next()
            elif token.kind == "op" and token.op == "&":
                raise NotProven("'&' runs a command in the background")
            elif token.kind == "eof" or self._is_stop(token, stops):
                return
            else:
                raise NotProven(f"unexpected '{token.op or (token.word.text if token.word else '')}'")

    def _is_stop(self, token: _Token, stops: frozenset[str]) -> bool:
        if token.kind == "op":
            return token.op in stops
        return token.word is not None and token.word.plain and token.word.value in stops

    def and_or(self) -> None:
        self.pipeline()
        while self.peek().kind == "op" and self.peek().op in ("&&", "||"):
            self.next()
            self.skip_newlines()
            self.pipeline()

    def pipeline(self) -> None:
        token = self.peek()
        if token.word is not None and token.word.plain and token.word.value == "!":
            self.next()
        self.command()
        while self.peek().kind == "op" and self.peek().op in ("|", "|&"):
            self.next()
            self.skip_newlines()
            self.command()

    def command(self) -> None:
        token = self.peek()
        if token.kind == "op" and token.op == "(":
            self.next()
            self.nested(frozenset({")"}))
            self.expect_op(")")
            self.trailing_redirections()
            return
        word = token.word
        if word is not None and word.plain and word.value in _KEYWORDS:
            if word.value == "{":
                self.next()
                self.nested(frozenset({"}"}))
                self.expect_word("}")
                self.trailing_redirections()
                return
            if word.value == "if":
                self.next()
                self.if_clause()
                self.trailing_redirections()
                return
            raise NotProven(f"'{word.value}' is not analysed")
        if token.kind != "word" and not (token.kind == "op" and token.op in _REDIRECTIONS):
            raise NotProven(f"unexpected '{token.op or 'end of command'}'")
        self.simple_command()

    def if_clause(self) -> None:
        self.nested(frozenset({"then"}))
        self.expect_word("then")
        self.nested(frozenset({"elif", "else", "fi"}))
        while self.peek().word is not None and self.peek().word.value == "elif":  # type: ignore[union-attr]
            self.next()
            self.nested(frozenset({"then"}))
            self.expect_word("then")
            self.nested(frozenset({"elif", "else", "fi"}))
        if self.peek().word is not None and self.peek().word.value == "else":  # type: ignore[union-attr]
            self.next()
            self.nested(frozenset({"fi"}))
        self.expect_word("fi")

    def nested(self, stops: frozenset[str]) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise NotProven(f"nested deeper than {MAX_DEPTH} levels")
        self.command_list(stops)
        self.depth -= 1

    def simple_command(self) -> None:
        assignments: list[Word] = []
        words: list[Word] = []
        while True:
            token = self.peek()
            if token.kind == "op" and token.op in _REDIRECTIONS:
                self.next()
                self.redirection(token)
            elif token.kind == "word":
                self.next()
                assert token.word is not None
                if not words and token.word.assigns is not None:
                    assignments.append(token.word)
                else:
                    words.append(token.word)
            elif token.kind == "op" and token.op == "(":
                raise NotProven("function definitions are not analysed")
            else:
                break
        for assignment in assignments:
            name = assignment.assigns or ""
            if words and not SAFE_ENV.match(name):
                raise NotProven(f"'{name}=' before a command changes its environment")
            if not words and (not SAFE_VAR.match(name) or name in TIED_VARS):
                raise NotProven(f"assigning '{name}' can change what later commands run")
        if words:
            self.check_command(words)

    def trailing_redirections(self) -> None:
        while self.peek().kind == "op" and self.peek().op in _REDIRECTIONS:
            self.redirection(self.next())

    def redirection(self, token: _Token) -> None:
        op = token.op
        target = self.next()
        if target.kind != "word" or target.word is None:
            raise NotProven(f"redirection '{op}' without a target")
        word = target.word
        if op in ("<<", "<<-"):
            if word.value is None:
                raise NotProven(f"here-document delimiter '{word.text}' is not a literal word")
            self._heredocs.append((word.value, op == "<<-", word.plain))
            return
        if op in ("<", "<<<"):
            return
        if op in (">&", "<&") and word.value is not None and re.fullmatch(r"\d+|-", word.value):
            return  # duplicates or closes a descriptor
        if op == "<&":
            raise NotProven(f"redirection '<&{word.text}' is not analysed")
        if word.value in NULL_TARGETS:
            return
        raise NotProven(f"output redirection '{token.io}{op}' writes a file ({word.text})")

    def check_command(self, words: list[Word]) -> None:
        if not words:
            return
        first = words[0]
        if first.trusted and len(words) == 1:
            return  # the inventory's status/logs command: read by the inventory's contract
        for word in words:
            if word.shell_text is not None:
                raise NotProven(f"'{word.shell_text}' is the inventory's shell text, not a read-only program")
        values = tuple(w.value for w in words)
        if all(v is not None for v in values) and not any(w.splits for w in words) and values in self.trusted:
            return
        if first.value is None or first.splits:
            raise NotProven(f"the command name '{first.text}' is not a literal word")
        name = first.value
        if "/" in name:
            directory, _, base = name.rpartition("/")
            name = base if f"{directory}/" in PROGRAM_DIRS else name
        check = PROGRAMS.get(name)
        if check is None:
            written = f" (written {first.text})" if first.text != first.value else ""
            raise NotProven(f"'{first.value}' is not a read-only program{written}")
        check(self, name, words[1:])

    # -- tokens --------------------------------------------------------------------------------
    def skip_newlines(self) -> None:
        while self.peek().kind == "op" and self.peek().op == "\n":
            self.next()

    def expect_op(self, op: str) -> None:
        token = self.next()
        if token.kind != "op" or token.op != op:
            raise NotProven(f"'{op}' expected")

    def expect_word(self, value: str) -> None:
        token = self.next()
        if token.word is None or not token.word.plain or token.word.value != value:
            raise NotProven(f"'{value}' expected")

    def peek(self) -> _Token:
        if self._peeked is None:
            self._peeked = self._lex()
        return self._peeked

    def next(self) -> _Token:
        token = self.peek()
        self._peeked = None
        return token

    def _lex(self) -> _Token:
        s, n = self.source, len(self.source)
        while self.pos < n:
            c = s[self.pos]
            if c in " \t":
                self.pos += 1
            elif s.startswith("\\\n", self.pos):
                self.pos += 2
            elif c == "#":
                end = s.find("\n", self.pos)
                self.pos = n if end < 0 else end
            else:
                break
        if self.pos >= n:
            return _Token("eof")
        digits = _IO_NUMBER.match(s, self.pos)
        io = ""
        if digits:
            io = digits.group()
            self.pos += len(io)
        for op in _OPERATORS:
            if s.startswith(op, self.pos):
                if io and op not in _REDIRECTIONS:
                    break
                self.pos += len(op)
                if op == "\n":
                    self._read_heredocs()
                elif op == "<(":
                    return _Token("word", word=self._process_substitution())
                elif op == ">(":
                    raise NotProven("process substitution '>(...)' is written to")
                elif op in (";;", ";&"):
                    raise NotProven(f"'{op}' is not analysed")
                return _Token("op", op, io=io)
        if io:
            self.pos -= len(io)
        return _Token("word", word=self._word())

    def _process_substitution(self) -> Word:
        self.substitution(")")
        return Word("<(...)", None, "/")

    def substitution(self, closer: str) -> None:
        """A command substitution or `<(...)`: its commands run too, so they must read only."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise NotProven(f"nested deeper than {MAX_DEPTH} levels")
        saved = self._peeked
        self._peeked = None
        self.command_list(frozenset({closer}))
        self.expect_op(closer)
        self._peeked = saved
        self.depth -= 1

    def _word(self) -> Word:
        s, n = self.source, len(self.source)
        start = self.pos
        value: list[str] = []  # known characters, while known
        prefix: list[str] | None = None  # set when the first unknown character is met
        splits = ""
        quoted = expanded = False
        shell_text: str | None = None
        trusted = False
        unquoted_braces = ""
        glob_at: int | None = None  # where an unquoted '[' opened

        def unknown(kind: str = "", known: int | None = None) -> None:
            nonlocal prefix, splits
            if prefix is None:
                prefix = list(value[:known] if known is not None else value)
            if kind == "fields" or (kind == "glob" and splits != "fields"):
                splits = kind

        while self.pos < n:
            c = s[self.pos]
            if c in _META:
                break
            marker = self.markers.get(c)
            if marker is not None:
                self.pos += 1
                expanded = True
                if marker.kind == "value":
                    unknown()
                else:
                    shell_text = marker.text
                    trusted = marker.kind == "trusted"
                    unknown("fields")
                continue
            if c == "\\":
                if self.pos + 1 >= n:
                    raise NotProven("a trailing backslash is not analysed")
                if s[self.pos + 1] != "\n":
                    value.append(s[self.pos + 1])
                    quoted = True
                self.pos += 2
            elif c == "'":
                end = s.find("'", self.pos + 1)
                if end < 0:
                    raise NotProven("unterminated single quote")
                self._no_markers(s[self.pos + 1 : end])
                value.append(s[self.pos + 1 : end])
                quoted = True
                self.pos = end + 1
            elif c == '"':
                self.pos += 1
                quoted = True
                if self._double_quoted(value):
                    expanded = True
                    unknown()
            elif c == "$":
                kind = self._dollar(in_quotes=False)
                if kind is None:
                    value.append("$")
                else:
                    expanded = True
                    unknown(kind)
            elif c == "`":
                self._backticks(in_quotes=False)
                expanded = True
                unknown("fields")
            elif c in "*?":
                unknown("glob")
                self.pos += 1
                value.append(c)
            elif c == "[":
                if glob_at is None:
                    glob_at = len(value)
                self.pos += 1
                value.append(c)
            elif c == "]" and glob_at is not None:
                unknown("glob", glob_at)
                self.pos += 1
                value.append(c)
            elif c == "~" and self.pos == start:
                self.pos += 1
                value.append(c)
                unknown("glob")  # a home directory: one word, never an option
            else:
                if c in "{},.":
                    unquoted_braces += c
                self.pos += 1
                value.append(c)
        text = self._display(s[start : self.pos])
        if _BRACE_EXPANSION.search(unquoted_braces):
            prefix, splits = [], "fields"  # brace expansion {a,b} / {1..9}: any words
        joined = "".join(value)
        assign = None
        match = _NAME.match(s, start)  # unquoted name characters only
        if match and s.startswith(("=", "+="), match.end()):
            assign = match.group()
        plain = not quoted and not expanded and prefix is None
        return Word(
            text=text,
            value=joined if prefix is None else None,
            prefix=joined if prefix is None else "".join(prefix),
            splits=splits,
            plain=plain,
            assigns=assign,
            shell_text=shell_text,
            trusted=trusted and self.pos - start == 1,  # the word is the marker alone
        )

    def _double_quoted(self, value: list[str]) -> bool:
        """Read up to the closing quote; True when an expansion made part of it unknown."""
        s, n = self.source, len(self.source)
        unknown = False
        while True:
            if self.pos >= n:
                raise NotProven("unterminated double quote")
            c = s[self.pos]
            if c in self.markers:
                raise NotProven(f"'{self.markers[c].text}' inside quotes: the engine quotes it already")
            if c == '"':
                self.pos += 1
                return unknown
            if c == "\\" and self.pos + 1 < n and s[self.pos + 1] in '$`"\\\n':
                if s[self.pos + 1] != "\n":
                    value.append(s[self.pos + 1])
                self.pos += 2
            elif c == "$":
                if self._dollar(in_quotes=True) is None:
                    value.append("$")
                else:
                    unknown = True
            elif c == "`":
                self._backticks(in_quotes=True)
                unknown = True
            else:
                value.append(c)
                self.pos += 1

    def _dollar(self, *, in_quotes: bool) -> str | None:
        """Consume one `$` expansion: "fields" (splits unquoted), or None for a literal `$`."""
        s = self.source
        nxt = s[self.pos + 1 : self.pos + 2]
        if s.startswith("$((", self.pos):
            raise NotProven("arithmetic expansion '$((...))' is not analysed")
        if nxt == "(":
            self.pos += 2
            self.substitution(")")
            return "fields"
        if nxt == "{":
            match = _BRACED.match(s, self.pos)
            if not match:
                raise NotProven("parameter expansion '${...}' is not analysed beyond ${NAME}")
            self.pos = match.end()
            return "fields"
        if nxt in ("'", '"') and not in_quotes:
            raise NotProven(f"'${nxt}...{nxt}' quoting is not analysed")
        match = _NAME.match(s, self.pos + 1)
        if match:
            self.pos = match.end()
            return "fields"
        if nxt and nxt in _SPECIAL_PARAMS:
            self.pos += 2
            return "fields"
        self.pos += 1
        return None

    def _backticks(self, *, in_quotes: bool) -> None:
        s, n = self.source, len(self.source)
        i = self.pos + 1
        inner: list[str] = []
        while True:
            if i >= n:
                raise NotProven("unterminated backquote")
            c = s[i]
            if c == "`":
                break
            if c == "\\" and i + 1 < n and s[i + 1] in ("$`\\" + ('"' if in_quotes else "")):
                inner.append(s[i + 1])
                i += 2
            else:
                inner.append(c)
                i += 1
        self.pos = i + 1
        if self.depth + 1 > MAX_DEPTH:
            raise NotProven(f"nested deeper than {MAX_DEPTH} levels")
        _Parser("".join(inner), self.depth + 1, self.markers, self.trusted).program()

    def _read_heredocs(self) -> None:
        s, n = self.source, len(self.source)
        for delimiter, strip_tabs, expands in self._heredocs:
            while True:
                if self.pos >= n:
                    raise NotProven(f"here-document '{delimiter}' has no end")
                end = s.find("\n", self.pos)
                end = n if end < 0 else end
                line = s[self.pos : end]
                self.pos = min(end + 1, n)
                if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                    break
                if expands and ("`" in line or "$(" in line or "${" in line):
                    raise NotProven(f"an expansion in here-document '{delimiter}' is not analysed")
                self._no_markers(line)
        self._heredocs = []

    def _no_markers(self, text: str) -> None:
        for c in text:
            if c in self.markers:
                raise NotProven(f"'{self.markers[c].text}' inside quotes: the engine quotes it already")

    def _display(self, raw: str) -> str:
        if not self.markers:
            return raw
        return "".join(self.markers[c].text if c in self.markers else c for c in raw)


def _words_of(text: str) -> tuple[str, ...] | None:
    """A trusted command's words, when it is one simple command of literal words (else None)."""
    parser = _Parser(text)
    words: list[str] = []
    try:
        while True:
            token = parser.next()
            if token.kind == "eof":
                return tuple(words) if words else None
            if token.word is None or token.word.value is None or token.word.splits:
                return None
            words.append(token.word.value)
    except NotProven:
        return None


def classify(command: str, *, trusted: Iterable[str] = ()) -> Verdict:
    """Whether `command` is proven read-only. `trusted`: commands read by contract (an inventory's
    service.status and service.logs), accepted as a whole command or as one simple command."""
    trusted = [t for t in trusted if t and t.strip()]
    if any(command.strip() == t.strip() for t in trusted):
        return Verdict(True)
    return _run(command, {}, tuple(w for w in (_words_of(t) for t in trusted) if w))


def _run(command: str, markers: Mapping[str, Marker], trusted: Sequence[tuple[str, ...]]) -> Verdict:
    if len(command) > MAX_LENGTH:
        return Verdict(False, f"the command is longer than {MAX_LENGTH} characters")
    if not command.strip():
        return Verdict(False, "an empty command")
    if "\x00" in command:
        return Verdict(False, "a NUL character (the remote shell would see only what precedes it)")
    try:
        _Parser(command, 0, markers, trusted).program()
    except NotProven as exc:
        return Verdict(False, str(exc))
    except RecursionError:
        return Verdict(False, "nested too deeply to analyse")
    return Verdict(True)


_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_TRUSTED_EXPRESSIONS = frozenset({"service.status", "service.logs"})


def classify_template(source: str) -> Verdict:
    """`classify` for a `run:` template: each `{{ value }}` is one word the engine shell-quotes.

    `{{ service.status }}` and `{{ service.logs }}` are the inventory's read commands (read by its
    contract); any other `{{ service.* }}` is unquoted shell text and never read. `{% %}` blocks are
    not analysed. At run time the rendered command is classified again with the real values.
    """
    if _PRIVATE_USE.search(source):
        return Verdict(False, "private-use characters are not analysed")
    markers: dict[str, Marker] = {}

    def replace(match: re.Match[str]) -> str:
        expression = match.group(1).strip()
        if expression in _TRUSTED_EXPRESSIONS:
            kind = "trusted"
        elif re.search(r"\bservice\b", expression):
            kind = "shell"
        else:
            kind = "value"
        char = chr(0xE000 + len(markers))
        if len(markers) >= 0x1800:
            raise NotProven("too many template values")
        markers[char] = Marker(kind, "{{ " + expression + " }}")
        return char

    try:
        text = _EXPRESSION.sub(replace, source)
    except NotProven as exc:
        return Verdict(False, str(exc))
    for left in ("{{", "}}", "{%", "%}", "{#", "#}"):
        if left in text:
            return Verdict(False, f"template text '{left}' is not analysed (only {{{{ value }}}})")
    return _run(text, markers, ())
