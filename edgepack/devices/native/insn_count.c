/* TCG plugin for qemu-aarch64: counts the guest instructions executed between two
 * marker syscalls, with a breakdown that shows which kernels a runtime chose.
 *
 * Wall time under emulation says nothing about a device's speed; the number of guest
 * instructions inside the timed loop is deterministic, and its mix (SIMD, dot product,
 * matrix multiply-accumulate) shows whether int8 took the SDOT/SMMLA kernels that make it
 * fast on a real core. The runner (runner_script.py, et_runner.cpp) issues the markers
 * around its timed loop only when EDGEPACK_MARKERS=1.
 *
 *   qemu-aarch64 -plugin ./libinsn_count.so,outfile=/tmp/counts.json ...
 *
 * Counting is per translation block (inline adds at block entry), which is exact for
 * blocks that run to their end; a block cut short by a fault would over-count, and the
 * runners do not fault. Counters are shared by all vCPUs without atomics: count with
 * one runtime thread, or the figure is approximate.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

/* Must equal MARKER_* in runner_script.py and et_runner.cpp. */
#define MARKER_SYSCALL 0xED9E
#define MARKER_MAGIC 0x65646765
#define MARKER_START 1
#define MARKER_STOP 2

enum { TOTAL, SIMD_FP, DOTPROD, MMLA, NCOUNTERS };
static const char *const counter_names[NCOUNTERS] = {"instructions", "simd_fp", "dotprod", "mmla"};

static uint64_t counters[NCOUNTERS];
static uint64_t window_start[NCOUNTERS];
static uint64_t window_sum[NCOUNTERS];
static int windows, open_window, unbalanced;
static char *outfile;

/* A64 encodings (Arm ARM, "A64 instruction set encoding"). */
static int is_simd_fp(uint32_t insn)
{
    uint32_t op = (insn >> 25) & 0x7;
    /* op0 = x111: SIMD and FP data processing; op0 = x1x0 with V=1: SIMD and FP loads
     * and stores (bits 27:25 = 110). */
    return op == 0x7 || op == 0x6;
}

static int is_dotprod(uint32_t insn)
{
    /* SDOT/UDOT (vector): 0 Q U 01110 10 0 Rm 100101 Rn Rd */
    if ((insn & 0x9FE0FC00u) == 0x0E809400u) {
        return 1;
    }
    /* SDOT/UDOT (by element): 0 Q U 01111 10 L M Rm 1110 H 0 Rn Rd */
    if ((insn & 0x9FC0F400u) == 0x0F80E000u) {
        return 1;
    }
    return 0;
}

static int is_mmla(uint32_t insn)
{
    /* SMMLA/UMMLA/USMMLA (vector): 0 1 U 01110 10 0 Rm 1010 B 1 Rn Rd */
    return (insn & 0xDFE0F400u) == 0x4E80A400u;
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    uint64_t n[NCOUNTERS] = {0};
    size_t count = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < count; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint32_t word;
        n[TOTAL]++;
        if (qemu_plugin_insn_size(insn) != sizeof word) {
            continue;
        }
        memcpy(&word, qemu_plugin_insn_data(insn), sizeof word);
        n[SIMD_FP] += is_simd_fp(word);
        n[DOTPROD] += is_dotprod(word);
        n[MMLA] += is_mmla(word);
    }
    for (int c = 0; c < NCOUNTERS; c++) {
        if (n[c]) {
            qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &counters[c], n[c]);
        }
    }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                       uint64_t a7, uint64_t a8)
{
    if (num != MARKER_SYSCALL || a1 != MARKER_MAGIC) {
        return;
    }
    if (a2 == MARKER_START) {
        if (open_window) {
            unbalanced = 1;
        }
        memcpy(window_start, counters, sizeof counters);
        open_window = 1;
    } else if (a2 == MARKER_STOP) {
        if (!open_window) {
            unbalanced = 1;
            return;
        }
        for (int c = 0; c < NCOUNTERS; c++) {
            window_sum[c] += counters[c] - window_start[c];
        }
        open_window = 0;
        windows++;
    }
}

static void write_json(FILE *f, const char *name, const uint64_t *values)
{
    fprintf(f, "\"%s\": {", name);
    for (int c = 0; c < NCOUNTERS; c++) {
        fprintf(f, "%s\"%s\": %" PRIu64, c ? ", " : "", counter_names[c], values[c]);
    }
    fprintf(f, "}");
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", outfile);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        qemu_plugin_outs("insn_count: cannot write the result file\n");
        return;
    }
    fprintf(f, "{\"schema\": \"edgepack.insn-count/1\", \"windows\": %d, \"balanced\": %s, ", windows,
            unbalanced || open_window ? "false" : "true");
    write_json(f, "window", window_sum);
    fprintf(f, ", ");
    write_json(f, "process", counters);
    fprintf(f, "}\n");
    fclose(f);
    rename(tmp, outfile);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                           char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "outfile=", 8) == 0) {
            outfile = strdup(argv[i] + 8);
        }
    }
    if (!outfile || strlen(outfile) > 4000) {
        fprintf(stderr, "insn_count: give outfile=PATH\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
