package console

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/nemesis-ml/nemesis/internal/httpauth"
)

// cookieName holds the token a login stored.
const cookieName = "nemesis_token"

// scope is what a request needs: reading pages, or changing settings.
type scope int

const (
	scopeRead scope = iota
	scopeWrite
)

// allowed is the console's one authorization check: the pages need the
// read scope, changes the settings-write scope, as the APIs behind them.
func (c *Console) allowed(r *http.Request, s scope) bool {
	need := httpauth.Read
	if s == scopeWrite {
		need = httpauth.SettingsWrite
	}
	return c.cfg.Auth.Allowed(withBearer(r), need) == 0
}

// withBearer returns r with the login cookie's token as its bearer token,
// when it has no Authorization header of its own.
func withBearer(r *http.Request) *http.Request {
	if r.Header.Get("Authorization") != "" {
		return r
	}
	cookie, err := r.Cookie(cookieName)
	if err != nil {
		return r
	}
	r2 := r.Clone(r.Context())
	r2.Header.Set("Authorization", "Bearer "+cookie.Value)
	return r2
}

// read wraps a page that needs the read scope: without it, the login page.
func (c *Console) read(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !c.allowed(r, scopeRead) {
			http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		next(w, r)
	})
}

// api wraps a JSON API behind a page: the read scope, from the bearer token
// or the login cookie (a download link sends the cookie), refused with 401 or
// 403 as JSON like every other API.
func (c *Console) api(next http.HandlerFunc) http.Handler {
	guarded := c.cfg.Auth.Require(httpauth.Read, next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		guarded.ServeHTTP(w, withBearer(r))
	})
}

// write wraps an action that needs the write scope.
func (c *Console) write(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !c.allowed(r, scopeWrite) {
			c.fail(w, r, http.StatusUnauthorized, "Changing settings needs a token with the write scope: log in again.")
			return
		}
		next(w, r)
	})
}

type loginData struct {
	Next  string
	Error string
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "login", page{Title: "Log in", Data: loginData{Next: safeNext(r.URL.Query().Get("next"))}})
}

// login checks the token and keeps it in a cookie scripts cannot read and
// other sites cannot send.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	token := r.PostFormValue("token")
	next := safeNext(r.PostFormValue("next"))
	probe := r.Clone(r.Context())
	probe.Header.Set("Authorization", "Bearer "+token)
	if c.cfg.Auth.Allowed(probe, httpauth.Read) != 0 {
		c.render(w, r, http.StatusUnauthorized, "login", page{Title: "Log in", Data: loginData{Next: next, Error: "That token is not valid."}})
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

// safeNext keeps a redirect after login inside the console.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "//") {
		return "/ui/"
	}
	return next
}
