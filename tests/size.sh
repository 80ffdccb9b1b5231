#!/bin/sh
# tests/size.sh BUILD_DIR: the footprint gates behind `make size`.
#
# For a Cortex-M4 (arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os) and for
# RISC-V (riscv64-unknown-elf-gcc -march=rv32imc -mabi=ilp32 -Os, over
# picolibc), each where its compiler is installed, the core is built as
# firmware builds it (-DWS_NO_OS -DWS_NO_MALLOC -DWS_NO_LOOP; no TLS, no
# deflate) in four configurations (client and server, server only,
# client only, and client and server with WS_FIXED_BUFFERS), and
# examples/firmware_client.c is linked with
# --gc-sections (built as the Makefile's FW_DEFS build it: client only,
# fixed buffers). The run fails when:
#   - a configuration's code (.text and .rodata: what goes to flash) is
#     over its budget (the table below);
#   - the core has any .data or .bss;
#   - a function's stack frame (-fstack-usage) is over 512 B, or not
#     static (a VLA, alloca);
#   - the core needs from the C library anything but memcpy, memmove,
#     memset, memcmp and strlen. The compiler's own helpers (libgcc:
#     __aeabi_*, __lshrdi3 and the like) are listed, not refused: they are
#     not the C library, and every program on the target links them.
# It prints each function's cost for the full core, largest first (the
# first 15), and the deepest call chain's stack from -fcallgraph-info
# (calls through the application's callbacks not followed: the
# application's frames come on top of it).
build=${1:-build}
ARM_CC=${ARM_CC:-arm-none-eabi-gcc}
RV_CC=${RV_CC:-riscv64-unknown-elf-gcc}
STACK_MAX=${STACK_MAX:-512}
LIBC_OK="memcpy memmove memset memcmp strlen"
DEFS=${SIZE_DEFS:-"-DWS_NO_OS -DWS_NO_MALLOC -DWS_NO_LOOP"}
dir=$build/size
mkdir -p "$dir"
fail=0
ran=0

# Budgets in bytes of .text + .rodata. The GOALS (issue 18) are 8192 for
# the full core and 6144 for the firmware link's ws code on the
# Cortex-M4. They are NOT met: the gates stand where the code is today
# (the measured figure rounded up to 64 B), so that CI passes and any
# growth fails it. Measured when set: Cortex-M4 full 13,533 (goal 8,192:
# 5,341 over), firmware link 8,674 (goal 6,144: 2,530 over). The cuts of
# WS_SMALL took 3.4 KB off; the memory budget's hook, pong coalescing and
# the slow-reader clock (issue 15) and two error strings (issue 17) put
# 790 B back; a pass over conn.c, the handshake parsers, Base64, UTF-8
# (WS_SMALL) and the error names took 1,572 B off. On 2026-12-04: a pass
# over the HTTP handshake (one writer for the error and HTTP answers'
# heads and for header lines, the key checked without a Base64 decoder,
# the parsers' argument checks in the public functions only) took 287 B
# off the full core and 122 B off the firmware link; frame and message
# lengths counted in size_t under WS_SMALL (ws__flen) 108 B and 114 B;
# WS_FIXED_BUFFERS, which the firmware link uses, 624 B more off it.
# Lower a figure whenever the code shrinks.
#   target  full   server  client  firmware link (ws code)  full, fixed buffers
budget() { # target configuration
  b_cfg=$2
  case $1 in
    m4)   set -- 13568 11648 10496 8704 12864 ;;
    rv32) set -- 17536 15040 13696 10560 16640 ;;
  esac
  case $b_cfg in full) echo "$1" ;; server) echo "$2" ;; client) echo "$3" ;; link) echo "$4" ;; fixed) echo "$5" ;; esac
}

bad() { echo "size: FAIL: $*"; fail=1; }

# Bytes of .text* and .rodata* sections in an object file.
code_bytes() { # size-tool object
  "$1" -A "$2" | awk '$1 ~ /^\.(text|rodata)/ {s += $2} END {print s + 0}'
}
data_bytes() { # size-tool object
  "$1" -A "$2" | awk '$1 ~ /^\.(data|bss|sdata|sbss)/ {s += $2} END {print s + 0}'
}

# Bytes of a linked program's .text*/.rodata* that came from one object,
# from the link map (after "Linker script and memory map": the discarded
# sections are listed before it).
link_bytes() { # map object
  awk -v obj="$2" '
    /^Linker script and memory map/ { on = 1; next }
    !on { next }
    NF == 1 && $1 ~ /^\./ { sec = $1; next }
    NF == 4 && $1 ~ /^\./ && $2 ~ /^0x/ && $3 ~ /^0x/ { sec = $1; sz = $3; f = $4 }
    NF == 3 && $1 ~ /^0x/ && $2 ~ /^0x/ { sz = $2; f = $3 }
    NF != 3 && NF != 4 { sec = ""; next }
    f == obj && sec ~ /^\.(text|rodata|srodata)/ { s += strtonum_(sz) }
    { f = ""; sec = "" }
    function strtonum_(h,   i, c, v) {
      v = 0; h = tolower(substr(h, 3))
      for (i = 1; i <= length(h); i++) { c = index("0123456789abcdef", substr(h, i, 1)) - 1; v = v * 16 + c }
      return v
    }
    END { print s + 0 }' "$1"
}

# The deepest stack over the call graph of a -fcallgraph-info=su file:
# prints "BYTES f1 > f2 > ...".
deepest() { # .ci file
  awk '
    /^node:/ {
      t = $0; sub(/.*title: "/, "", t); sub(/".*/, "", t)
      l = $0; sub(/.*label: "/, "", l)
      n = l; sub(/\\n.*/, "", n); name[t] = n
      b = 0; if (match(l, /[0-9]+ bytes/)) b = substr(l, RSTART, RLENGTH - 6) + 0
      own[t] = b; nodes[++nn] = t
    }
    /^edge:/ {
      s = $0; sub(/.*sourcename: "/, "", s); sub(/".*/, "", s)
      d = $0; sub(/.*targetname: "/, "", d); sub(/".*/, "", d)
      if (d == "__indirect_call") next
      ne[s]++; edge[s, ne[s]] = d
    }
    function depth(t,   i, d, best, bi) {
      if (t in memo) return memo[t]
      if (busy[t]) return 0   # recursion: counted once
      busy[t] = 1; best = 0; bi = ""
      for (i = 1; i <= ne[t]; i++) {
        d = depth(edge[t, i])
        if (d > best) { best = d; bi = edge[t, i] }
      }
      busy[t] = 0; nxt[t] = bi
      memo[t] = own[t] + best
      return memo[t]
    }
    END {
      top = ""; tb = -1
      for (i = 1; i <= nn; i++) { d = depth(nodes[i]); if (d > tb) { tb = d; top = nodes[i] } }
      out = tb " B:"; sep = " "
      for (t = top; t != ""; t = nxt[t]) { out = out sep name[t] " (" own[t] ")"; sep = " > " }
      print out
    }' "$1"
}

check_target() { # name cc cflags... (the target flags)
  tgt=$1 cc=$2; shift 2
  prefix=${cc%gcc}
  sz=${prefix}size nm=${prefix}nm
  if ! command -v "$cc" >/dev/null 2>&1; then
    echo "size: $cc not installed: $tgt skipped"
    return 0
  fi
  if ! printf '#include <stdint.h>\n#include <string.h>\nint x;\n' | "$cc" "$@" -x c -c - -o "$dir/probe.o" 2>/dev/null; then
    echo "size: $cc has no C library for $* (Debian: libnewlib-arm-none-eabi, picolibc-riscv64-unknown-elf): $tgt skipped"
    return 0
  fi
  ran=1
  echo "== $tgt: $cc $* -Os $DEFS"
  for cfg in full server client fixed; do
    case $cfg in
      full) role= ;; server) role=-DWS_NO_CLIENT ;; client) role=-DWS_NO_SERVER ;;
      fixed) role=-DWS_FIXED_BUFFERS=1 ;; # both roles, as firmware on static buffers builds them
    esac
    o=$dir/ws-$tgt-$cfg.o
    # shellcheck disable=SC2086
    (cd "$dir" && "$cc" "$@" -Os -ffunction-sections -fdata-sections -std=c99 \
      -Wall -Wextra -Wpedantic -Werror $DEFS $role -I"$OLDPWD/include" \
      -fstack-usage -fcallgraph-info=su -c "$OLDPWD/src/ws.c" -o "ws-$tgt-$cfg.o") || { bad "$tgt $cfg: build"; continue; }
    code=$(code_bytes "$sz" "$o")
    data=$(data_bytes "$sz" "$o")
    lim=$(budget "$tgt" "$cfg")
    printf '  %-7s %6d B code (budget %d), %d B data+bss\n' "$cfg" "$code" "$lim" "$data"
    [ "$code" -le "$lim" ] || bad "$tgt $cfg: $code B of code, over the budget of $lim B"
    [ "$data" -eq 0 ] || bad "$tgt $cfg: $data B of .data/.bss (the core keeps no state of its own)"
    su=$dir/ws-$tgt-$cfg.su
    worst=$(sort -t '	' -k2 -n "$su" | tail -n 1)
    wb=$(echo "$worst" | awk -F '\t' '{print $2}')
    wf=$(echo "$worst" | awk -F '\t' '{n = $1; sub(/.*:/, "", n); print n}')
    echo "          worst frame: $wf $wb B (limit $STACK_MAX); deepest chain $(deepest "$dir/ws-$tgt-$cfg.ci")"
    awk -F '\t' -v max=$STACK_MAX '$2 > max || $3 !~ /^static/ {n = $1; sub(/.*:/, "", n); print n, $2, $3}' "$su" |
      while read -r f b q; do echo "size: FAIL: $tgt $cfg: $f uses $b B of stack ($q)"; done | grep . && fail=1
    extra=""
    helpers=""
    for u in $("$nm" -u "$o" | awk '{print $NF}'); do
      case " $LIBC_OK " in *" $u "*) continue ;; esac
      case $u in
        __aeabi_* | __*[sdt]i3 | __riscv_save_* | __riscv_restore_* | __clz* | __ctz* | __popcount* | __bswap*)
          helpers="$helpers $u" ;;
        *) extra="$extra $u" ;;
      esac
    done
    [ -z "$helpers" ] || echo "          compiler helpers:$helpers"
    [ -z "$extra" ] || bad "$tgt $cfg: needs C library symbols beyond $LIBC_OK:$extra"
    if [ "$cfg" = full ]; then
      echo "          largest functions (bytes):"
      "$nm" --size-sort -S -t d "$o" | awk '$3 ~ /[tT]/ {print $2, $4}' | sort -rn | head -n 15 |
        awk '{printf "            %5d %s\n", $1, $2}'
    fi
  done
  # The firmware example linked with --gc-sections: the ws code it keeps.
  printf '#include <stddef.h>\n#include <stdint.h>\nsize_t board_tcp_send(const void *b, size_t n) { (void)b; return n; }\nlong board_tcp_poll(void *b, size_t n) { (void)b; (void)n; return 0; }\nuint32_t board_millis(void) { return 0; }\nint board_rng(void *b, size_t n) { (void)b; (void)n; return 0; }\nint board_tcp_connect(void) { return 0; }\n' >"$dir/board.c"
  case $tgt in m4) specs="--specs=nano.specs --specs=nosys.specs" ;; *) specs= ;; esac
  o=$dir/fw-$tgt-ws.o
  # shellcheck disable=SC2086
  if "$cc" "$@" -Os -ffunction-sections -fdata-sections -std=c99 -Wall -Wextra -Wpedantic -Werror \
       $DEFS -DWS_NO_SERVER -DWS_FIXED_BUFFERS=1 -Iinclude -c src/ws.c -o "$o" &&
     "$cc" "$@" -Os -ffunction-sections -fdata-sections -std=c99 -Wall -Wextra -Wpedantic -Werror \
       $DEFS -DWS_NO_SERVER -DWS_FIXED_BUFFERS=1 -Iinclude -c examples/firmware_client.c -o "$dir/fw-$tgt-app.o" &&
     "$cc" "$@" -Os -c "$dir/board.c" -o "$dir/fw-$tgt-board.o" &&
     "$cc" "$@" $specs -Wl,--gc-sections -Wl,-Map="$dir/fw-$tgt.map" "$dir/fw-$tgt-app.o" "$o" \
       "$dir/fw-$tgt-board.o" -o "$dir/fw-$tgt.elf"; then
    code=$(link_bytes "$dir/fw-$tgt.map" "$o")
    lim=$(budget "$tgt" link)
    total=$("$sz" "$dir/fw-$tgt.elf" | awk 'NR == 2 {print $1}')
    printf '  %-7s %6d B ws code in examples/firmware_client.c linked with --gc-sections (budget %d; the whole program %d B of text)\n' \
      link "$code" "$lim" "$total"
    [ "$code" -le "$lim" ] || bad "$tgt firmware link: $code B of ws code, over the budget of $lim B"
    if "$nm" "$dir/fw-$tgt.elf" | grep -Eq ' (_?v?f?i?printf|__assert_func|_vfprintf_r)$'; then
      bad "$tgt firmware link: printf came in"
    fi
  else
    bad "$tgt firmware link: build"
  fi
}

check_target m4 "$ARM_CC" -mcpu=cortex-m4 -mthumb
check_target rv32 "$RV_CC" --specs=picolibc.specs -march=rv32imc -mabi=ilp32
[ "$ran" = 1 ] || echo "size: no cross compiler installed (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf): nothing checked"
if [ "$fail" -ne 0 ]; then echo "size: FAILED"; exit 1; fi
echo "size: ok"
