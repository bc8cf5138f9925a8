#!/usr/bin/env bash
# Mutation testing of server/src with cargo-mutants (configured in .cargo/mutants.toml).
#
#   ci/mutants.sh shard K N   the K-th of N consecutive slices of the mutants of the
#                             committed HEAD; writes mutants/shard-K-of-N.txt (commit it);
#                             exits 1 if a mutant is missed that the committed file had
#                             caught (or did not list)
#   ci/mutants.sh diff [BASE] only the code changed since BASE (default HEAD: your
#                             uncommitted changes), uncommitted changes included; writes
#                             target/mutants-diff.txt; exits 1 if a mutant is missed
#   ci/mutants.sh recheck F   runs the missed mutants of shard file F again at HEAD (after
#                             triage) and writes their new outcomes into F; a mutant the
#                             config now excludes is marked `excluded`, one whose code
#                             changed or moved `gone` (unrun runs it at its new place)
#   ci/mutants.sh unrun       the mutants of HEAD no shard file has an outcome for (shards
#                             run at different commits leave gaps where the slices moved,
#                             and a file changed since its shard ran is unrun at its new
#                             lines); writes mutants/unrun-<commit>.txt (commit it)
#   ci/mutants.sh score       the mutants of HEAD, each with its newest outcome in the shard
#                             files (or unrun): per file and total
#
# Mutants run on a detached worktree of HEAD (target/mutants-tree) with its own target
# directory (target/mutants-target), so the checkout you work in is never mutated and the
# builds stay incremental between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tree=$root/target/mutants-tree
export CARGO_TARGET_DIR=$root/target/mutants-target
mode=${1:-}
# The commit the worktree is made from (later commits in this checkout do not change it).
commit=$(git rev-parse --short HEAD)

# The worktree at HEAD; with "uncommitted", plus the working tree's changes to tracked files.
prepare() {
  ci/install-mutants.sh
  export PATH="$root/.tools/mutants/bin:$PATH"
  # The server's cluster-mode tests start a nats-server; the worktree has no .tools/.
  if [[ -z ${NATS_SERVER_BIN:-} ]]; then
    ci/install-nats.sh
    export NATS_SERVER_BIN=$root/.tools/bin/nats-server
  fi
  if [[ ! -e $tree/.git ]]; then
    git worktree prune
    git worktree add --detach --force "$tree" HEAD >/dev/null
  fi
  git -C "$tree" checkout --quiet --detach --force "$commit"
  git -C "$tree" clean -fdq
  if [[ ${1:-} == uncommitted ]] && ! git diff --quiet HEAD; then
    git diff HEAD | git -C "$tree" apply
  fi
}

# Writes "<outcome>\t<mutant>" lines from a cargo-mutants output directory, sorted by name.
outcomes() {
  local out=$1/mutants.out
  for outcome in caught missed timeout unviable; do
    if [[ -f $out/$outcome.txt ]]; then
      sed "s/^/$outcome\t/" "$out/$outcome.txt"
    fi
  done | sort -t$'\t' -k2
}

header() {
  echo "# cargo-mutants $(cargo mutants --version | cut -d' ' -f2), commit $commit, $1"
  echo "# started $2, took $3 s; $(date -u +%F)"
}

# Sets `args` to one `--re` per mutant name in file $1, each matching that name exactly.
# (cargo-mutants 27.1 applies no name filter to struct-field deletions, its issue #632: a
# run with `--re` also runs every such mutant; only the named ones' outcomes are kept.)
exact_args() {
  args=()
  while IFS= read -r name; do
    args+=(--re "^$(printf '%s' "$name" | sed 's#[][\.*^$(){}?+|]#\\&#g')\$")
  done <"$1"
}

have_results() {
  if ! compgen -G 'mutants/shard-*.txt' >/dev/null; then
    echo "no shard results in mutants/ yet" >&2
    exit 1
  fi
}

# "<mutant>\t<outcome>" for every mutant HEAD has now: its newest outcome in the result
# files (shards, then unrun runs, in name order; later lines overwrite earlier ones); a
# mutant with none, or only at other line numbers (its file changed since), is `unrun`;
# excluded ones are listed by their files. Plain awk (no gawk extensions).
newest_outcomes() {
  shopt -s nullglob
  local files=(mutants/shard-*.txt mutants/unrun-*.txt)
  ci/install-mutants.sh >&2
  export PATH="$root/.tools/mutants/bin:$PATH"
  local current
  current=$(mktemp)
  cargo mutants --list | sort -u >"$current"
  cat "${files[@]}" | grep -v '^#' | awk -F'\t' -v OFS='\t' '
    FILENAME == ARGV[1] { now[$0] = 1; next }
    { outcome[$2] = $1 }
    END {
      for (name in now) print name, ((name in outcome) ? outcome[name] : "unrun")
      for (name in outcome) if (!(name in now) && outcome[name] == "excluded") print name, "excluded"
    }' "$current" -
  rm -f "$current"
}

case $mode in
  shard)
    k=${2:?shard index}
    n=${3:?shard count}
    prepare
    out=$(mktemp -d)
    started=$(date -u +%FT%TZ)
    start=$SECONDS
    status=0
    (cd "$tree" && cargo mutants --in-place --shard "$k/$n" --output "$out" --no-times) \
      || status=$?
    # 0: all caught; 2: some missed; 3: some timed out; both are results. Anything else failed.
    if [[ $status != 0 && $status != 2 && $status != 3 ]]; then
      echo "cargo mutants failed with $status; see $out/mutants.out/debug.log" >&2
      exit "$status"
    fi
    mkdir -p mutants
    file=mutants/shard-$k-of-$n.txt
    {
      header "shard $k of $n" "$started" $((SECONDS - start))
      outcomes "$out"
    } >"$file"
    echo "wrote $file: $(grep -vc '^#' "$file") mutants, $(grep -c '^missed' "$file" || true) missed"
    # A miss the committed results did not have is new: a test lost its power, or new code
    # has none. (No committed file yet: a first run, nothing to compare.)
    if git cat-file -e "HEAD:$file" 2>/dev/null; then
      new=$(comm -13 <(git show "HEAD:$file" | grep '^missed' | sort) <(grep '^missed' "$file" | sort))
      if [[ -n $new ]]; then
        echo "new missed mutants (not missed in the committed $file):"
        echo "$new"
        exit 1
      fi
    fi
    ;;
  diff)
    base=${2:-HEAD}
    git rev-parse --verify --quiet "$base^{commit}" >/dev/null || { echo "no commit $base" >&2; exit 64; }
    prepare uncommitted
    out=$(mktemp -d)
    git diff "$base" -- server/src >"$out/changes.diff"
    if [[ ! -s $out/changes.diff ]]; then
      echo "no change to server/src since $base"
      exit 0
    fi
    started=$(date -u +%FT%TZ)
    start=$SECONDS
    status=0
    (cd "$tree" && cargo mutants --in-place --in-diff "$out/changes.diff" --output "$out" \
      --no-times) || status=$?
    report=target/mutants-diff.txt
    {
      header "changes since $(git rev-parse --short "$base") (uncommitted included)" "$started" $((SECONDS - start))
      outcomes "$out"
    } >"$report"
    missed=$(grep -c '^missed' "$report" || true)
    echo "mutants of the change: $(grep -vc '^#' "$report"), missed $missed ($report)"
    grep '^missed' "$report" || true
    if [[ $status != 0 && $status != 2 && $status != 3 ]]; then
      echo "cargo mutants failed with $status" >&2
      exit "$status"
    fi
    [[ $missed == 0 ]]
    ;;
  recheck)
    file=${2:?shard file}
    [[ -f $file ]] || { echo "no $file" >&2; exit 64; }
    prepare
    out=$(mktemp -d)
    grep '^missed' "$file" | cut -f2- >"$out/names"
    if [[ ! -s $out/names ]]; then
      echo "nothing missed in $file"
      exit 0
    fi
    exact_args "$out/names"
    (cd "$tree" && cargo mutants --list "${args[@]}") >"$out/listed" || true
    (cd "$tree" && cargo mutants --list --no-config "${args[@]}") >"$out/unfiltered" || true
    status=0
    if [[ -s $out/listed ]]; then
      (cd "$tree" && cargo mutants --in-place "${args[@]}" --output "$out" --no-times) || status=$?
      if [[ $status != 0 && $status != 2 && $status != 3 ]]; then
        echo "cargo mutants failed with $status" >&2
        exit "$status"
      fi
    fi
    # New outcomes replace the old lines; a name the config excludes now is `excluded`,
    # and one HEAD no longer has at all (its code changed or moved) is `gone`: `unrun`
    # runs it where it is now.
    outcomes "$out" >"$out/new"
    awk -F'\t' -v OFS='\t' -v commit="$commit" '
      FILENAME == ARGV[1] { listed[$0] = 1; next }
      FILENAME == ARGV[2] { unfiltered[$0] = 1; next }
      FILENAME == ARGV[3] { fresh[$2] = $1; next }
      /^#/ { print; next }
      $1 == "missed" && ($2 in fresh) { print fresh[$2], $2; next }
      $1 == "missed" && !($2 in listed) && ($2 in unfiltered) { print "excluded", $2; next }
      $1 == "missed" && !($2 in listed) { print "gone", $2; next }
      { print }
      END { print "# missed mutants rechecked at commit " commit }
    ' "$out/listed" "$out/unfiltered" "$out/new" "$file" >"$out/merged"
    mv "$out/merged" "$file"
    echo "rechecked $(wc -l <"$out/names") missed mutants: $(grep -c '^missed' "$file" || true) still missed"
    grep '^missed' "$file" || true
    ;;
  unrun)
    have_results
    newest_outcomes | awk -F'\t' '$2 == "unrun" { print $1 }' >"$root/target/mutants-unrun"
    count=$(wc -l <"$root/target/mutants-unrun")
    if ((count == 0)); then
      echo "every mutant of HEAD has an outcome"
      exit 0
    fi
    echo "$count mutants of HEAD have no outcome yet"
    prepare
    out=$(mktemp -d)
    exact_args "$root/target/mutants-unrun"
    started=$(date -u +%FT%TZ)
    start=$SECONDS
    status=0
    (cd "$tree" && cargo mutants --in-place "${args[@]}" --output "$out" --no-times) || status=$?
    if [[ $status != 0 && $status != 2 && $status != 3 ]]; then
      echo "cargo mutants failed with $status" >&2
      exit "$status"
    fi
    file=mutants/unrun-$commit.txt
    {
      header "the $count mutants no shard file had" "$started" $((SECONDS - start))
      outcomes "$out"
    } >"$file"
    echo "wrote $file: $(grep -vc '^#' "$file") mutants, $(grep -c '^missed' "$file" || true) missed"
    ;;
  score)
    have_results
    newest_outcomes |
      awk -F'\t' '{ split($1, parts, ":"); print parts[1] "\t" $2 }' | sort | awk -F'\t' '
        function row(f, c, m, t, u, x, r) {
          printf "%-36s %7d %7d %7d %8d %8d %6d ", f, c, m, t, u, x, r
          if (c + t + m) printf "%6.1f%%\n", 100 * (c + t) / (c + t + m); else print "      -"
        }
        BEGIN { printf "%-36s %7s %7s %7s %8s %8s %6s %7s\n", "file", "caught", "missed", "timeout", "unviable", "excluded", "unrun", "score" }
        $1 != file && file != "" { row(file, n["caught"], n["missed"], n["timeout"], n["unviable"], n["excluded"], n["unrun"]); delete n }
        { file = $1; n[$2]++; all[$2]++ }
        END {
          if (file != "") row(file, n["caught"], n["missed"], n["timeout"], n["unviable"], n["excluded"], n["unrun"])
          row("total", all["caught"], all["missed"], all["timeout"], all["unviable"], all["excluded"], all["unrun"])
        }'
    echo "score = (caught + timeout) / (caught + timeout + missed), over the mutants of HEAD that have an"
    echo "outcome; unviable mutants (they do not build), excluded ones (equivalent or not worth a test,"
    echo "with a reason each in .cargo/mutants.toml) and unrun ones (no shard has run them at their"
    echo "current lines) do not count"
    ;;
  *)
    awk 'NR > 1 && /^# Mutants run on/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'
    exit 64
    ;;
esac
