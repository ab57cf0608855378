// A host stand-in for libnvrtc: "compiling" a kernel source builds it with g++ after emu_rt.h into a
// shared library (cached by content hash), and the "PTX" handed back names that library and lists its
// kernels, for the fake libcuda to load. Compile errors come back as NVRTC's do, in the program log.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

typedef int nvrtcResult;
enum {
    NVRTC_SUCCESS = 0,
    NVRTC_ERROR_INVALID_INPUT = 3,
    NVRTC_ERROR_INVALID_PROGRAM = 4,
    NVRTC_ERROR_COMPILATION = 6,
    NVRTC_ERROR_BUILTIN_OPERATION_FAILURE = 7,
};

struct Program {
    std::string src, name, ptx, log;
};

static std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

static bool write_file(const std::string& path, const std::string& text) {
    std::ofstream f(path, std::ios::binary);
    f << text;
    return bool(f);
}

// The folder this library was loaded from: build.sh puts emu_rt.h and half.h beside it.
static std::string own_dir() {
    Dl_info info;
    if (!dladdr((void*)&own_dir, &info) || !info.dli_fname) return ".";
    std::string p = info.dli_fname;
    size_t slash = p.rfind('/');
    return slash == std::string::npos ? "." : p.substr(0, slash);
}

static uint64_t fnv1a(const std::string& s, uint64_t h = 0xcbf29ce484222325ull) {
    for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
    return h;
}

static std::string cache_dir() {
    if (const char* d = getenv("FACETRAIN_EMU_CACHE")) return d;
    const char* tmp = getenv("TMPDIR");
    return std::string(tmp ? tmp : "/tmp") + "/facetrain-emu-" + std::to_string(getuid());
}

static int run(const std::string& cmd) {
    int r = system(cmd.c_str());
    return WIFEXITED(r) ? WEXITSTATUS(r) : 1;
}

// Kernel names: every identifier after "EMU_KERNEL_TAG void" in the preprocessed source (__global__
// expands to that tag, so macro-generated kernels are found with their real names).
static std::vector<std::string> kernel_names(const std::string& pre) {
    std::vector<std::string> names;
    const std::string tag = "EMU_KERNEL_TAG";
    for (size_t at = pre.find(tag); at != std::string::npos; at = pre.find(tag, at + 1)) {
        size_t i = at + tag.size();
        while (i < pre.size() && isspace((unsigned char)pre[i])) i++;
        if (pre.compare(i, 4, "void") != 0) continue;
        i += 4;
        while (i < pre.size() && isspace((unsigned char)pre[i])) i++;
        size_t j = i;
        while (j < pre.size() && (isalnum((unsigned char)pre[j]) || pre[j] == '_')) j++;
        if (j > i) names.push_back(pre.substr(i, j - i));
    }
    return names;
}

// Part of the cache key: bump when the tail appended below changes, so no cached library lacks it.
static const char kTailVersion[] = "emu-tail-2 (__emu_find, __emu_find_pack, __emu_launch)";

// On a CPU with FMA, the kernels' fmaf (batch norm, optimizers) compiles to the instruction instead of
// a libm call: 15-35% off the batch-norm kernels, same bits (fmaf is exact either way, and a*b+c stays
// two roundings: g++ would contract it by default once FMA is enabled). Decided on the machine that
// runs the kernels, which is where their library is built.
static const char* isa_flags() { return __builtin_cpu_supports("fma") ? " -mfma -ffp-contract=off" : ""; }

// What every kernel library is built with: the runtime headers and the ISA flags.
static std::string runtime_text() {
    return read_file(own_dir() + "/emu_rt.h") + read_file(own_dir() + "/half.h") + isa_flags();
}

static nvrtcResult compile(Program& p, const std::string& arch) {
    std::string dir = own_dir();
    std::string cxx = getenv("CXX") ? getenv("CXX") : "g++";
    std::string rt = runtime_text();
    if (rt.empty()) {
        p.log = "fake NVRTC: emu_rt.h not found beside " + dir + "/libnvrtc.so (run tests/cuda_emu/build.sh)";
        return NVRTC_ERROR_BUILTIN_OPERATION_FAILURE;
    }
    std::string cache = cache_dir();
    mkdir(cache.c_str(), 0700);
    char key[32];
    snprintf(key, sizeof key, "%016llx", (unsigned long long)fnv1a(p.src, fnv1a(rt, fnv1a(cxx, fnv1a(kTailVersion)))));
    std::string so = cache + "/" + p.name + "-" + key + ".so";
    std::string names_file = so + ".kernels";
    std::string names_text;
    struct stat st;
    if (stat(so.c_str(), &st) != 0 || (names_text = read_file(names_file)).empty()) {
        std::string tmp = so + ".tmp" + std::to_string(getpid()) + "-" + std::to_string((uintptr_t)&p);
        std::string src = tmp + ".cpp", pre = tmp + ".ii", log = tmp + ".log";
        std::string body = "#include \"emu_rt.h\"\n#line 1 \"" + p.name + "\"\n" + p.src + "\n";
        if (!write_file(src, body)) {
            p.log = "fake NVRTC: cannot write " + src;
            return NVRTC_ERROR_BUILTIN_OPERATION_FAILURE;
        }
        std::string flags = " -std=c++17 -I'" + dir + "' ";
        int r = run(cxx + flags + "-E -P -o '" + pre + "' '" + src + "' 2> '" + log + "'");
        std::vector<std::string> names = r == 0 ? kernel_names(read_file(pre)) : std::vector<std::string>();
        if (r == 0) {
            std::string tail = "\nstatic const EmuKernelEntry __emu_table[] = {\n";
            for (auto& n : names)
                tail += "  {\"" + n + "\", [](void** p) { __emu_call(&" + n + ", p); },\n"
                        "   [](void** p) { return __emu_pack(&" + n + ", p); }},\n";
            tail += "  {nullptr, nullptr, nullptr}};\n"
                    "extern \"C\" __attribute__((visibility(\"default\"))) EmuTrampoline __emu_find(const char* n) {\n"
                    "  for (const EmuKernelEntry* e = __emu_table; e->name; e++) if (!strcmp(e->name, n)) return e->tramp;\n"
                    "  return nullptr;\n}\n"
                    // For asynchronous launches: copies a launch's arguments (see EmuPacked in emu_rt.h).
                    "extern \"C\" __attribute__((visibility(\"default\"))) EmuPacker __emu_find_pack(const char* n) {\n"
                    "  for (const EmuKernelEntry* e = __emu_table; e->name; e++) if (!strcmp(e->name, n)) return e->pack;\n"
                    "  return nullptr;\n}\n"
                    "extern \"C\" __attribute__((visibility(\"default\"))) int __emu_launch(EmuTrampoline t, unsigned gx,\n"
                    "    unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, void** p, char* err, size_t n) {\n"
                    "  return __emu_run(t, gx, gy, gz, bx, by, bz, p, err, n);\n}\n";
            write_file(src, body + "#line 1 \"emu-tail\"\n" + tail);
            r = run(cxx + flags + "-O2" + isa_flags() + " -fPIC -shared -w -DEMU_KERNEL_TAG= -o '" + tmp + "' '" + src +
                    "' 2> '" + log + "'");
        }
        p.log = read_file(log);
        if (r == 0) {
            for (auto& n : names) names_text += n + "\n";
            std::string names_tmp = names_file + ".tmp" + std::to_string(getpid());
            write_file(names_tmp, names_text);
            rename(tmp.c_str(), so.c_str());
            rename(names_tmp.c_str(), names_file.c_str());
        }
        unlink(src.c_str());
        unlink(pre.c_str());
        unlink(log.c_str());
        unlink(tmp.c_str());
        if (r != 0) return NVRTC_ERROR_COMPILATION;
    }
    p.ptx = "// facetrain host emulation: a host library, not PTX\n.version 9.0\n.target sm_" + arch + "\n.emu_so " + so +
            "\n";
    std::istringstream lines(names_text);
    for (std::string n; std::getline(lines, n);)
        if (!n.empty()) p.ptx += ".entry " + n + "\n";
    return NVRTC_SUCCESS;
}

extern "C" {

nvrtcResult nvrtcVersion(int* major, int* minor) {
    // Not a real NVRTC version, so PTX caches keyed by it never mix real PTX with these modules. The
    // minor follows the kernel runtime, so a cached "PTX" never names a library built against an older one.
    static int rt_minor = (int)(fnv1a(runtime_text(), fnv1a(kTailVersion)) % 1000);
    *major = 99;
    *minor = rt_minor;
    return NVRTC_SUCCESS;
}

const char* nvrtcGetErrorString(nvrtcResult r) {
    switch (r) {
        case NVRTC_SUCCESS: return "NVRTC_SUCCESS";
        case NVRTC_ERROR_INVALID_INPUT: return "NVRTC_ERROR_INVALID_INPUT";
        case NVRTC_ERROR_INVALID_PROGRAM: return "NVRTC_ERROR_INVALID_PROGRAM";
        case NVRTC_ERROR_COMPILATION: return "NVRTC_ERROR_COMPILATION";
        default: return "NVRTC_ERROR_BUILTIN_OPERATION_FAILURE";
    }
}

nvrtcResult nvrtcCreateProgram(Program** prog, const char* src, const char* name, int nheaders, const char* const* headers,
                               const char* const* include_names) {
    if (!prog || !src) return NVRTC_ERROR_INVALID_INPUT;
    if (nheaders > 0) return NVRTC_ERROR_INVALID_INPUT;  // the engine's sources include nothing
    std::string n = name ? name : "kernel";
    for (char& c : n)
        if (!isalnum((unsigned char)c) && c != '_') c = '_';
    *prog = new Program{src, n, "", ""};
    return NVRTC_SUCCESS;
}

nvrtcResult nvrtcDestroyProgram(Program** prog) {
    if (!prog || !*prog) return NVRTC_ERROR_INVALID_PROGRAM;
    delete *prog;
    *prog = nullptr;
    return NVRTC_SUCCESS;
}

nvrtcResult nvrtcCompileProgram(Program* p, int nopts, const char* const* opts) {
    if (!p) return NVRTC_ERROR_INVALID_PROGRAM;
    std::string arch = "90";
    for (int i = 0; i < nopts; i++) {
        std::string o = opts[i];
        size_t at = o.find("compute_");
        if (at == std::string::npos) at = o.find("sm_");
        if (o.rfind("-arch", 0) == 0 || o.rfind("--gpu-architecture", 0) == 0)
            if (at != std::string::npos) arch = o.substr(o.find('_', at) + 1);
    }
    return compile(*p, arch);
}

nvrtcResult nvrtcGetPTXSize(Program* p, size_t* n) {
    if (!p) return NVRTC_ERROR_INVALID_PROGRAM;
    *n = p->ptx.size() + 1;
    return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetPTX(Program* p, char* out) {
    if (!p) return NVRTC_ERROR_INVALID_PROGRAM;
    memcpy(out, p->ptx.c_str(), p->ptx.size() + 1);
    return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetProgramLogSize(Program* p, size_t* n) {
    if (!p) return NVRTC_ERROR_INVALID_PROGRAM;
    *n = p->log.size() + 1;
    return NVRTC_SUCCESS;
}
nvrtcResult nvrtcGetProgramLog(Program* p, char* out) {
    if (!p) return NVRTC_ERROR_INVALID_PROGRAM;
    memcpy(out, p->log.c_str(), p->log.size() + 1);
    return NVRTC_SUCCESS;
}

}  // extern "C"
