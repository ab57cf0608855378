// How the cuBLAS and cuDNN stand-ins reach the emulated libcuda to queue their work on a stream: its
// symbols are looked up in the process, never loaded from here (under the Python checks no driver is
// loaded and work runs at once). Only the emulated driver is taken: an object named exactly
// "libcuda.so", as cudarc opens it; a real driver (libcuda.so.1, loaded by PyTorch, say) never is.
#pragma once
#include <atomic>
#include <cstring>
#include <dlfcn.h>
#include <link.h>
#include <string>

static int emu_find_libcuda(struct dl_phdr_info* info, size_t, void* out) {
    const char* name = info->dlpi_name ? info->dlpi_name : "";
    const char* base = strrchr(name, '/');
    if (strcmp(base ? base + 1 : name, "libcuda.so") != 0) return 0;
    *(std::string*)out = name;
    return 1;
}

// cudarc may have opened the library by full path, which dlopen("libcuda.so", RTLD_NOLOAD) does not
// match when it has no soname, hence the walk over the loaded objects.
static void* emu_driver_sym(const char* sym) {
    void* lib = dlopen("libcuda.so", RTLD_LAZY | RTLD_NOLOAD);
    if (!lib) {
        std::string path;
        dl_iterate_phdr(emu_find_libcuda, &path);
        if (!path.empty()) lib = dlopen(path.c_str(), RTLD_LAZY | RTLD_NOLOAD);
    }
    if (!lib) return nullptr;
    void* p = dlsym(lib, sym);
    dlclose(lib);  // balances the NOLOAD reference; cudarc keeps the library loaded
    return p;
}

// Only hits are cached: the driver may be loaded after the library that asks.
template <typename F>
static F emu_cached_driver_sym(std::atomic<F>& cache, const char* name) {
    F f = cache.load(std::memory_order_acquire);
    if (!f) {
        f = (F)emu_driver_sym(name);
        if (f) cache.store(f, std::memory_order_release);
    }
    return f;
}

typedef int (*EmuLaunchHostFunc)(void* stream, void (*fn)(void*), void* data);
typedef int (*EmuStreamSynchronize)(void* stream);

// The driver's cuLaunchHostFunc, or null when no emulated driver is loaded.
static EmuLaunchHostFunc emu_launch_host_func() {
    static std::atomic<EmuLaunchHostFunc> cache{nullptr};
    return emu_cached_driver_sym(cache, "cuLaunchHostFunc");
}
