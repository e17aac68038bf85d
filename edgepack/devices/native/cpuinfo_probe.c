/* Prints a Linux arm64 /proc/cpuinfo for the CPU it runs on.
 *
 * Run under `qemu-aarch64 -cpu MODEL`, it describes the emulated model: qemu-user 7.2
 * passes the guest the host's x86 /proc/cpuinfo, and runtimes that parse it (ONNX
 * Runtime's cpuinfo) crash or pick the wrong kernels. The MIDR fields come from the ID
 * register (readable at EL0 the way Linux emulates it) and the feature list from the
 * HWCAP words the emulated kernel hands the process, so the file can never disagree with
 * the model it is generated for.
 *
 *   cpuinfo_probe NPROC > cpuinfo
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/auxv.h>

/* Bit order of the Linux arm64 hwcap strings (arch/arm64/kernel/cpuinfo.c). */
static const char *const hwcap_names[] = {
    "fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp", "asimdhp",
    "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4", "asimddp", "sha512",
    "sve", "asimdfhm", "dit", "uscat", "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg",
};
static const char *const hwcap2_names[] = {
    "dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4", "flagm2", "frint",
    "svei8mm", "svef32mm", "svef64mm", "svebf16", "i8mm", "bf16", "dgh", "rng", "bti", "mte",
    "ecv", "afp", "rpres", "mte3", "sme", "sme_i16i64", "sme_f64f64", "sme_i8i32", "sme_f16f32",
    "sme_b16f32", "sme_f32f32", "sme_fa64", "wfxt", "ebf16", "sve_ebf16",
};

int main(int argc, char **argv) {
    int nproc = argc > 1 ? atoi(argv[1]) : 1;
    if (nproc < 1) nproc = 1;
    uint64_t midr;
    __asm__ volatile("mrs %0, midr_el1" : "=r"(midr));
    unsigned long hwcap = getauxval(AT_HWCAP), hwcap2 = getauxval(AT_HWCAP2);
    for (int cpu = 0; cpu < nproc; ++cpu) {
        printf("processor\t: %d\nBogoMIPS\t: 50.00\nFeatures\t:", cpu);
        for (unsigned i = 0; i < sizeof hwcap_names / sizeof *hwcap_names; ++i)
            if (hwcap & (1UL << i)) printf(" %s", hwcap_names[i]);
        for (unsigned i = 0; i < sizeof hwcap2_names / sizeof *hwcap2_names; ++i)
            if (hwcap2 & (1UL << i)) printf(" %s", hwcap2_names[i]);
        printf("\nCPU implementer\t: 0x%02x\nCPU architecture: 8\nCPU variant\t: 0x%x\n"
               "CPU part\t: 0x%03x\nCPU revision\t: %u\n\n",
               (unsigned)((midr >> 24) & 0xff), (unsigned)((midr >> 20) & 0xf),
               (unsigned)((midr >> 4) & 0xfff), (unsigned)(midr & 0xf));
    }
    return 0;
}
